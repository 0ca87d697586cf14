"""The CosyVoice enrollment service's client side: httpx client, uploads, ledger, synthesis check."""
