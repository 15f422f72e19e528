"""CLI sub-apps, one module per command group; ``tidegate.cli`` mounts them."""
