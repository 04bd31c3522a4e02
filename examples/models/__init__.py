"""Models the example job files load by import path (``examples.models.NAME:factory``)."""
