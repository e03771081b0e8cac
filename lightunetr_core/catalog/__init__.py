"""Models a user can get without training: the versioned catalog of the authors' released checkpoints
(``catalog.json``), their download (verified, converted into a bundle, added to a model library) and their
conversion (:mod:`.reference`, also behind ``lightunetr import-reference``)."""

from lightunetr_core.catalog.catalog import CatalogEntry, CatalogError, load_catalog

__all__ = ["CatalogEntry", "CatalogError", "load_catalog"]
