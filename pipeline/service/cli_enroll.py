"""The `enroll` and `voices` subcommands: enroll clean clips, and list/show/update/delete voices."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

ENVIRONMENT = """\
environment (as the DashScope SDK reads it; a set variable wins over pipeline.yaml):
  DASHSCOPE_API_KEY        the API key (or DASHSCOPE_API_KEY_FILE_PATH, ~/.dashscope/api_key)
  DASHSCOPE_BASE_URL       base URL (SDK 2.x, read first), else DASHSCOPE_HTTP_BASE_URL:
                           default https://dashscope.aliyuncs.com/api/v1 (Beijing);
                           international: https://dashscope-intl.aliyuncs.com/api/v1;
                           workspace host: https://{WorkspaceId}.{region}.maas.aliyuncs.com/api/v1
  DASHSCOPE_REGION         without a base URL: that region's workspace host (with a workspace)
                           or shared host; DASHSCOPE_API_REGION + DASHSCOPE_WORKSPACE_ID (SDK 1.x)
  DASHSCOPE_WORKSPACE      sends the X-DashScope-WorkSpace header
  DASHSCOPE_TIMEOUT        seconds per request (overrides enroll.request_timeout_s)
  DASHSCOPE_MAX_RETRIES    retries per request (overrides enroll.max_retries)"""

ENROLL_EPILOG = ENVIRONMENT + """
exit codes: 0 every file has a voice, 1 some failed, 2 usage or config error"""

VOICES_EPILOG = ENVIRONMENT + """
exit codes: 0 done, 1 the service refused or failed (one line on stderr: code, request id, hint),
  2 usage or config error"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "enroll",
        help="run the pipeline, upload each clean clip and create a CosyVoice voice from it",
        description="Take recordings through the `run` chain (as `voiceprep run`), upload each clip that passes, "
        "create a voice from it, wait until the service has reviewed it, and record it in the ledger. "
        "Re-running never enrolls the same audio twice. Prints one line per file; voice ids go to the JSONL report.",
        epilog=ENROLL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files, or folders searched recursively for audio")
    p.add_argument("--prefix", metavar="P", help="voice id prefix: 1-10 lowercase letters or digits (or enroll.prefix)")
    p.add_argument("--target-model", metavar="M", help="TTS model the voices are for (default: enroll.target_model, "
                   "cosyvoice-v1); it must equal the model used for synthesis")
    p.add_argument("--out", default="voiceprep-out", metavar="DIR", help="folder for the clean clips, the ledger and "
                   "the report (default: voiceprep-out)")
    p.add_argument("--config", metavar="PIPELINE.yaml", help="pipeline file (default: the bundled pipeline.yaml)")
    p.add_argument("--ledger", metavar="FILE.sqlite", help="ledger path (default: enroll.ledger, else OUT/"
                   "voiceprep-ledger.sqlite); processes sharing one never make a voice twice and share "
                   "enroll.rate_limit_per_s")
    p.add_argument("--report", metavar="FILE.jsonl", help="append one JSON line per input (default: "
                   "OUT/enroll-report.jsonl)")
    p.add_argument("--jobs", type=int, default=None, metavar="N", help="worker processes for the pipeline")
    p.add_argument("--as-is", action="store_true", help="do not run the pipeline: enroll the files as given "
                   "(each must pass `voiceprep check`)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the service's review (voices stay DEPLOYING)")
    p.add_argument("--json", action="store_true", help="print the JSON line of each file instead of a text line")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-file lines, only the summary")
    p.set_defaults(func=cmd_enroll)

    v = sub.add_parser(
        "voices",
        help="list, show, update or delete the voices of the account",
        description="Manage enrolled voices with the service's own actions: list, show, update, delete.",
        epilog=VOICES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    vs = v.add_subparsers(dest="voices_command", metavar="ACTION", parser_class=type(v), help="one of:")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PIPELINE.yaml", help="pipeline file (timeouts, uploads, ledger)")
    common.add_argument("--ledger", metavar="FILE.sqlite", help="also keep this ledger in step")
    common.add_argument("--json", action="store_true", help="machine-readable output (JSON)")

    sub_kw: dict[str, Any] = {"parents": [common], "epilog": VOICES_EPILOG,
                              "formatter_class": argparse.RawDescriptionHelpFormatter}
    ls = vs.add_parser("list", help="every voice (with a prefix)", description="List the account's voices: id, "
                       "status, creation date; every page unless --page is given.", **sub_kw)
    ls.add_argument("--prefix", metavar="P", help="only voices with this prefix")
    ls.add_argument("--page", type=int, default=None, metavar="N", help="only this page (0-based)")
    ls.add_argument("--page-size", type=int, default=100, metavar="N", help="voices per request (default 100)")
    ls.set_defaults(func=cmd_voices_list)

    show = vs.add_parser("show", help="one voice: status, target model, audio URL, dates",
                         description="Show one voice as the service describes it (query_voice).", **sub_kw)
    show.add_argument("voice_id", metavar="VOICE_ID", help="the voice id, e.g. cosyvoice-v2-alice-8b23...")
    show.set_defaults(func=cmd_voices_show)

    up = vs.add_parser("update", help="replace a voice's audio (a URL, or a local file to upload)",
                       description="Replace a voice's audio; the voice goes back to DEPLOYING until reviewed.",
                       **sub_kw)
    up.add_argument("voice_id", metavar="VOICE_ID", help="the voice to update")
    up.add_argument("source", metavar="URL|FILE", help="a public audio URL, or a local file uploaded first "
                    "(enroll.upload picks how)")
    up.add_argument("--wait", action="store_true", help="wait until the service has reviewed the new audio")
    up.set_defaults(func=cmd_voices_update)

    rm = vs.add_parser("delete", help="delete voices (frees quota)", description="Delete voices; a voice "
                       "already gone counts as deleted after a retry. Exit 1 if any could not be deleted.", **sub_kw)
    rm.add_argument("voice_ids", nargs="+", metavar="VOICE_ID", help="one or more voice ids")
    rm.set_defaults(func=cmd_voices_delete)

    def _voices_help(args: argparse.Namespace) -> int:
        v.print_help()
        return EXIT_USAGE

    v.set_defaults(func=_voices_help)


# --- helpers ------------------------------------------------------------------------------------


def _err(text: str) -> None:
    sys.stderr.write(f"voiceprep: {text}\n")
    sys.stderr.flush()


def _settings(config_path: str | None) -> tuple[Any, Any] | None:
    """(Config, EnrollSettings), or None after printing a config error."""
    from pipeline.config import load
    from pipeline.errors import ConfigError

    from .settings import EnrollSettings

    try:
        cfg = load(config_path)
        return cfg, EnrollSettings.from_mapping(cfg.enroll)
    except ConfigError as exc:
        _err(f"config error: {exc}")
        return None


def _client(settings: Any) -> Any:
    from . import enroll as enroll_mod

    return enroll_mod.make_client(settings)


def _say(text: str) -> None:
    """Print a line; the bytes of a non-UTF-8 file name are shown as ``\\xNN``, never a UnicodeEncodeError."""
    from .ledger import display_path

    sys.stdout.write(display_path(text) + "\n")


def _print_json(obj: Any) -> None:
    _say(json.dumps(obj, ensure_ascii=False))


# --- enroll --------------------------------------------------------------------------------------


def cmd_enroll(args: argparse.Namespace) -> int:
    import dataclasses

    from pipeline.errors import ConfigError
    from pipeline.pipeline import Pipeline
    from pipeline.report import FileResult, summary, write_line

    from . import enroll as enroll_mod
    from .ledger import LEDGER_NAME, display_path

    loaded = _settings(args.config)
    if loaded is None:
        return EXIT_USAGE
    cfg, settings = loaded
    if args.jobs is not None and args.jobs < 1:
        _err("error: --jobs must be at least 1")
        return EXIT_USAGE
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        _err(f"error: no such file or folder: {display_path(missing[0])}")
        return EXIT_USAGE
    out = Path(args.out)
    ledger_path = Path(args.ledger) if args.ledger else (
        Path(settings.ledger).expanduser() if settings.ledger else out / LEDGER_NAME)
    try:
        enroller = enroll_mod.make_enroller(
            settings, prefix=args.prefix, target_model=args.target_model, ledger=ledger_path,
            wait=False if args.no_wait else None,
        )
    except ConfigError as exc:
        _err(f"config error: {exc}")
        return EXIT_USAGE
    report_path = Path(args.report) if args.report else out / "enroll-report.jsonl"
    try:
        if args.as_is:
            prepared = _check_as_is(args.paths, cfg)
        else:
            from pipeline.runner import run_paths

            chain = Pipeline(tuple(s for s in cfg.run if s.name != "enroll"))  # enrolled below, once
            prepared = run_paths(args.paths, out, cfg.with_run(chain), jobs=args.jobs)
        if not prepared:
            _err("error: no audio files found in " + ", ".join(args.paths))
            return EXIT_USAGE
        # one pass over the clips; one that another process is enrolling right now is taken last
        enrolled = iter(enroller.submit_files([res.output for res in prepared if res.ok and res.output]))
        submitted = [(res, next(enrolled) if res.ok and res.output else None) for res in prepared]
        finished: list[FileResult] = []
        report_path.parent.mkdir(parents=True, exist_ok=True)
        # the real paths were for reading; the report and the lines show non-UTF-8 names as \xNN
        with open(report_path, "a", encoding="utf-8", errors="backslashreplace") as fh:
            for res, er in submitted:
                res = dataclasses.replace(res, input=display_path(res.input),
                                          output=display_path(res.output) if res.output else res.output)
                if er is not None:
                    if enroller.wait:  # --no-wait: done as soon as the voice is created
                        er = enroller.finish(er)
                    er.input = res.input
                    res = _merge(res, er)
                write_line(fh, res)
                finished.append(res)
                if args.json:
                    _print_json(res.as_dict())
                elif not args.quiet:
                    _say(_line(res))
                sys.stdout.flush()
    except ConfigError as exc:
        _err(f"config error: {exc}")
        return EXIT_USAGE
    finally:
        enroll_mod.close_enroller(enroller)
    if not args.json:
        _say(summary(finished) + f"; report: {report_path}")
    return EXIT_OK if all(r.ok for r in finished) else EXIT_FAILED


def _check_as_is(paths: list[str], cfg: Any) -> list[Any]:
    """Files as given, each judged by the `check` chain first (a refused one is not uploaded)."""
    from pipeline.api import check
    from pipeline.plan import find
    from pipeline.report import FileResult

    out = []
    for f in find(paths):
        v = check(f, cfg)
        if v.ok:
            out.append(FileResult(input=str(f), status="ok", output=str(f), warnings=v.warnings, metrics=v.metrics))
        else:
            out.append(FileResult(input=str(f), status="rejected", code=v.code, message=v.message, hint=v.hint,
                                  stage=v.stage, metrics=v.metrics))
    return out


def _merge(res: Any, er: Any) -> Any:
    """The pipeline's FileResult with the enrollment's outcome: voice id in the report, failure if any."""
    import dataclasses

    extra = dict(res.extra)
    extra.update(voice_id=er.voice_id, voice_status=er.voice_status, enrollment=er.as_dict())
    if er.status == "ok":
        return dataclasses.replace(res, extra=extra)
    return dataclasses.replace(res, status="rejected", code=er.code, message=er.message, hint=er.hint,
                               stage="enroll", extra=extra)


def _line(res: Any) -> str:
    vid = res.extra.get("voice_id")
    if res.ok:
        e = res.extra.get("enrollment", {})
        return f"{res.input}: {vid} {res.extra.get('voice_status')} ({e.get('action')}) <- {res.output}"
    return res.line() + (f" [voice {vid}]" if vid else "")


# --- voices ----------------------------------------------------------------------------------------


def _voices(args: argparse.Namespace, body: Any) -> int:
    """Run ``body(client, settings)`` with one-line errors: ServiceError -> 1, ConfigError -> 2."""
    from pipeline.errors import ConfigError

    from .errors import ServiceError

    loaded = _settings(args.config)
    if loaded is None:
        return EXIT_USAGE
    _cfg, settings = loaded
    try:
        client = _client(settings)
    except ConfigError as exc:
        _err(f"config error: {exc}")
        return EXIT_USAGE
    try:
        return int(body(client, settings))
    except ServiceError as exc:
        _err(exc.line())
        return EXIT_FAILED
    except ConfigError as exc:
        _err(f"config error: {exc}")
        return EXIT_USAGE
    finally:
        client.close()


def _ledger(args: argparse.Namespace, settings: Any) -> Any:
    from .ledger import Ledger

    path = args.ledger or settings.ledger
    return Ledger(Path(path).expanduser()) if path else None


def cmd_voices_list(args: argparse.Namespace) -> int:
    if args.page_size < 1 or (args.page is not None and args.page < 0):
        _err("error: --page must be >= 0 and --page-size >= 1")
        return EXIT_USAGE

    def body(client: Any, _settings: Any) -> int:
        if args.page is not None:
            voices = client.list_voices(args.prefix, page_index=args.page, page_size=args.page_size)
        else:
            voices = list(client.iter_voices(args.prefix, page_size=args.page_size))
        for v in voices:
            if args.json:
                _print_json(v)
            else:
                _say(f"{v.get('voice_id')}  {v.get('status')}  {v.get('gmt_create')}")
        if not args.json:
            _say(f"{len(voices)} voice(s)")
        return EXIT_OK

    return _voices(args, body)


def cmd_voices_show(args: argparse.Namespace) -> int:
    def body(client: Any, _settings: Any) -> int:
        info = {"voice_id": args.voice_id, **client.query_voice(args.voice_id)}
        if args.json:
            _print_json(info)
        else:
            for k, v in info.items():
                _say(f"{k}: {v}")
        return EXIT_OK

    return _voices(args, body)


def cmd_voices_update(args: argparse.Namespace) -> int:
    def body(client: Any, settings: Any) -> int:
        from .enroll import audio_sha256
        from .ledger import DELETED
        from .upload import make_uploader

        src = Path(args.source)
        if "://" in args.source:
            url = args.source
        elif src.is_file():
            data = src.read_bytes()
            sha = audio_sha256(data)
            url = make_uploader(settings, client).upload(
                data, object_name=f"{sha}{src.suffix.lower() or '.wav'}", filename=src.name).url
        else:
            _err(f"error: {args.source} is neither a URL nor a file")
            return EXIT_USAGE
        client.update_voice(args.voice_id, url)
        ledger = _ledger(args, settings)
        if ledger is not None:  # the voice no longer stands for the audio the ledger has for it
            with ledger:
                ledger.set_status(args.voice_id, DELETED, client.last_request_id)
        info = {"voice_id": args.voice_id, "status": "DEPLOYING", "request_id": client.last_request_id}
        if args.wait:
            info.update(client.wait_until_ready(args.voice_id, timeout_s=settings.ready_timeout_s,
                                                poll_interval_s=settings.poll_interval_s))
        if args.json:
            _print_json(info)
        else:
            _say(f"{args.voice_id}: updated, {info.get('status')}")
        return EXIT_FAILED if info.get("status") == "UNDEPLOYED" else EXIT_OK

    return _voices(args, body)


def cmd_voices_delete(args: argparse.Namespace) -> int:
    def body(client: Any, settings: Any) -> int:
        from .errors import ServiceError
        from .ledger import DELETED

        ledger = _ledger(args, settings)
        failed = 0
        try:
            for vid in args.voice_ids:
                try:
                    client.delete_voice(vid)
                except ServiceError as exc:
                    failed += 1
                    out = {"voice_id": vid, "deleted": False, **exc.as_dict()}
                    if not args.json:
                        _err(f"{vid}: {exc.line()}")
                else:
                    out = {"voice_id": vid, "deleted": True, "request_id": client.last_request_id}
                    if ledger is not None:
                        ledger.set_status(vid, DELETED, client.last_request_id)
                    if not args.json:
                        _say(f"{vid}: deleted")
                if args.json:
                    _print_json(out)
        finally:
            if ledger is not None:
                ledger.close()
        return EXIT_FAILED if failed else EXIT_OK

    return _voices(args, body)
