"""Self-supervised pretraining of the bundle's encoder: one module per method, and what the methods share.

``base`` (method interface, pooled features, export), ``heads``, ``losses``, ``momentum`` (EMA networks),
``masking`` (reconstruction masks), ``monitor`` (loss, embedding spread, kNN probe), ``snapshots``
(reconstruction pictures), ``methods`` (the ``ssl_method`` registry) and ``curriculum`` (stages run in order).
"""

from .. import lazy_submodules

__getattr__ = lazy_submodules(__name__)
