"""One VITS model (Style-Bert-VITS2 JP-Extra arrangement), its data and its training.

This package knows neither Ray nor MLflow: a trial reports through a :class:`model.sink.Sink`.
"""
