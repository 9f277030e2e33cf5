"""consist-semantic: Semantic consistency for consist: LMM reflection with calibrated yes/no, frontal controller, conversational feedback (in development)."""

__version__ = "0.1.0"
