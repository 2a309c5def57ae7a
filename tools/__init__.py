"""anymoda's built-in expert tools, one module per expert family.

They are registered through the ``anymoda.tools`` entry point (see pyproject.toml), exactly as a
third-party package would register its own.
"""

from .image_classification import ImageClassification
from .ocr import OpticalCharacterRecognition
from .sentence_embeddings import SentenceEmbedding, SentenceSimilarity
from .speech import SpeechRecognition, VoiceActivityDetection
from .speech_synthesis import TextToSpeech

BUILTIN_TOOLS = [
    SpeechRecognition,
    VoiceActivityDetection,
    TextToSpeech,
    OpticalCharacterRecognition,
    ImageClassification,
    SentenceEmbedding,
    SentenceSimilarity,
]

__all__ = ["BUILTIN_TOOLS", *(tool.__name__ for tool in BUILTIN_TOOLS)]
