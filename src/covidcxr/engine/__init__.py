"""The training engine: one LightningModule for every classifier, ``train`` and ``evaluate``.

Lightning is imported only when training starts, so importing this package stays cheap.
"""
