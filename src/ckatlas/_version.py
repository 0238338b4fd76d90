"""The package's version, in a module of its own: any module may import it without importing the
package's public API (``ckatlas/__init__`` imports the heatmap, which sits high in the layers)."""

__version__ = "0.1.0"
