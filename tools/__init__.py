"""anymoda's built-in expert tools, one module per expert family.

They are registered through the ``anymoda.tools`` entry point (see pyproject.toml), exactly as a
third-party package would register its own.
"""

from .audio_analysis import AudioClassification, VoiceConversion
from .audio_generation import TextToAudio
from .captioning import ImageCaptioning
from .depth import DepthEstimation
from .detection import ObjectDetection, OpenVocabularyDetection
from .document_qa import DocumentQuestionAnswering
from .image_classification import ImageClassification
from .image_generation import ImageEditing, ImageToImage, TextToImage
from .native_chat import NativeChat
from .ocr import OpticalCharacterRecognition
from .segmentation import GroundedSegmentation, SegmentAnything, SemanticSegmentation
from .sentence_embeddings import SentenceEmbedding, SentenceSimilarity
from .speech import SpeechRecognition, VoiceActivityDetection
from .speech_enhancement import SpeechEnhancement
from .speech_synthesis import TextToSpeech
from .tabular import TabularClassification
from .text import (
    Chat,
    NamedEntityRecognition,
    QuestionAnswering,
    Summarization,
    TextGeneration,
    Translation,
)
from .time_series import TimeSeriesDescription
from .video_generation import TextToVideo
from .visual_question_answering import VisualQuestionAnswering

BUILTIN_TOOLS = [
    # speech and audio
    SpeechRecognition,
    VoiceActivityDetection,
    TextToSpeech,
    AudioClassification,
    VoiceConversion,
    SpeechEnhancement,
    # vision
    OpticalCharacterRecognition,
    ImageClassification,
    ImageCaptioning,
    VisualQuestionAnswering,
    DocumentQuestionAnswering,
    ObjectDetection,
    OpenVocabularyDetection,
    SegmentAnything,
    SemanticSegmentation,
    GroundedSegmentation,
    DepthEstimation,
    # generation
    TextToImage,
    ImageToImage,
    ImageEditing,
    TextToVideo,
    TextToAudio,
    # text
    SentenceEmbedding,
    SentenceSimilarity,
    Summarization,
    Translation,
    QuestionAnswering,
    NamedEntityRecognition,
    TextGeneration,
    Chat,
    TabularClassification,
    # time series
    TimeSeriesDescription,
    # the native path: a trained connector + LLM that perceives media directly
    NativeChat,
]

__all__ = ["BUILTIN_TOOLS", *(tool.__name__ for tool in BUILTIN_TOOLS)]
