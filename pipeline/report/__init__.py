"""The listening report (``build_report``).  May import every other package of ``pipeline``."""
