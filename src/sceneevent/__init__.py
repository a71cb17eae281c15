"""sceneevent: one network for acoustic scene classification and acoustic event tagging."""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

from .models.configuration_sceneevent import SceneEventConfig
from .models.feature_extraction_sceneevent import LogMelFeatureExtractor
from .models.modeling_sceneevent import SceneEventModel, SceneEventOutput

__version__ = "0.1.0"

# With the package imported, our own folders load without `trust_remote_code`.
AutoConfig.register(SceneEventConfig.model_type, SceneEventConfig, exist_ok=True)
AutoModel.register(SceneEventConfig, SceneEventModel, exist_ok=True)
AutoModelForAudioClassification.register(SceneEventConfig, SceneEventModel, exist_ok=True)
AutoFeatureExtractor.register(SceneEventConfig, LogMelFeatureExtractor, exist_ok=True)

__all__ = ["LogMelFeatureExtractor", "SceneEventConfig", "SceneEventModel", "SceneEventOutput", "__version__"]
