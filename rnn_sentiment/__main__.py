"""`python -m rnn_sentiment`: the `rnn-sentiment` command without its installed script."""

from __future__ import annotations

from rnn_sentiment.cli import main

raise SystemExit(main())
