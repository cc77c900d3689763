"""LSTM model code: architecture, windows and scaling, training, bundles, export.

The LSTM forecaster is tracked as its own piece of work and plugs into
``streamer.scoring.predictor.Predictor``. ``models`` never imports Kafka.
"""
