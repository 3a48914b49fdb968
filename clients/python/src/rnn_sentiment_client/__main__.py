"""`python -m rnn_sentiment_client`: the same command line as `rnn-sentiment-client`."""

import sys

from rnn_sentiment_client.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m rnn_sentiment_client"))
