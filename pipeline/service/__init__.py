"""The CosyVoice enrollment service: httpx client, uploads, ledger and a local emulator."""
