"""Helpers the tests and the benchmarks share, kept out of ``tests/`` so a bench (or
``client/demo/make.py``) never imports the test tree: spoken audio made on the spot
(``speech``), transcript comparison (``transcripts``), a paced STT request stream and loopback
STT settings (``stt``), and the reliability ledger (``ledger``). No service imports them."""
