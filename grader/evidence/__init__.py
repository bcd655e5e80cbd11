"""The evidence shown beside a score: transcript with word times (`transcribe`), fluency measures (`fluency`), the
comparison with the reference text (`alignment`), phone detail (`phones`, `lexicon`), put together by `build`."""

from .build import VERSION, EvidenceOptions, build_evidence

__all__ = ["VERSION", "EvidenceOptions", "build_evidence"]
