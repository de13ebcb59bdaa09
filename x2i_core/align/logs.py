"""Moved to x2i_core.training.logs (shared by every trainer); these names stay importable from here."""
from ..training.logs import FIXED_COLUMNS, CsvLog, TensorBoardLog, read_csv_log  # noqa: F401
