"""Data: schemas and loaders for MIC and Social-Chemistry-101, and the bundled sample corpus."""

from pathlib import Path

from cmva.data.mic import load_mic
from cmva.data.schema import DataError, LoadReport
from cmva.data.socialchem import load_socialchem

SAMPLE_DIR = Path(__file__).parent / "sample"
SAMPLE_MIC = SAMPLE_DIR / "mic_sample.csv"
SAMPLE_SOCIALCHEM = SAMPLE_DIR / "socialchem_sample.tsv"

__all__ = ["DataError", "LoadReport", "SAMPLE_MIC", "SAMPLE_SOCIALCHEM", "load_mic", "load_socialchem"]
