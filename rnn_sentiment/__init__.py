"""rnn-sentiment's one command line (`rnn_sentiment.cli`): serve, train, evaluate, compare,
predict and client, each a subcommand."""
