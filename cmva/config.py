"""Settings read from the environment.

Storage settings use the same variable names that KServe injects into a predictor from an S3 Secret
annotated with `serving.kserve.io/s3-endpoint` / `s3-usehttps` / `s3-verifyssl` / `s3-region`, so one
Secret configures training (KFP components), `cmva` on a laptop and the model servers alike.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlparse

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageSettings(BaseSettings):
    """How to reach MinIO / S3.

    `AWS_ENDPOINT_URL` (scheme included) wins over `S3_ENDPOINT` (host:port) + `S3_USE_HTTPS`.
    """

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    endpoint_url: str | None = Field(default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL"))
    endpoint: str | None = Field(default=None, validation_alias=AliasChoices("S3_ENDPOINT"))
    use_https: bool = Field(default=True, validation_alias=AliasChoices("S3_USE_HTTPS"))
    verify_ssl: bool = Field(default=True, validation_alias=AliasChoices("S3_VERIFY_SSL"))
    access_key: str | None = Field(default=None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID"))
    secret_key: str | None = Field(default=None, validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY"))
    region: str | None = Field(default=None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    # Bounded retries: an unreachable endpoint fails in about
    # sum(backoff * 2**i) seconds instead of hanging a pipeline step.
    max_retries: int = Field(default=4, validation_alias=AliasChoices("CMVA_S3_MAX_RETRIES"))
    backoff_s: float = Field(default=0.5, validation_alias=AliasChoices("CMVA_S3_BACKOFF_S"))
    timeout_s: float = Field(default=10.0, validation_alias=AliasChoices("CMVA_S3_TIMEOUT_S"))

    def host_and_tls(self) -> tuple[str, bool]:
        """The `host:port` and TLS flag for the minio client.

        Raises:
            ValueError: If no endpoint is configured.
        """
        if self.endpoint_url:
            u = urlparse(self.endpoint_url)
            if not u.netloc:
                raise ValueError(f"AWS_ENDPOINT_URL must include a scheme: {self.endpoint_url!r}")
            return u.netloc, u.scheme == "https"
        if self.endpoint:
            return self.endpoint.removeprefix("http://").removeprefix("https://"), self.use_https
        # AWS itself when nothing is set, as KServe does.
        return "s3.amazonaws.com", True


# ---------------------------------------------------------------------------------------------------
# Run profiles (README, "Profiles"). Each profile is one YAML recipe in cmva/recipes/, one section per stage.
# ---------------------------------------------------------------------------------------------------
from pydantic import BaseModel, ConfigDict  # noqa: E402


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a recipe is an error, not a silent default


class BaseCfg(_Stage):
    source: str = "smollm2"  # "tiny" | "smollm2" | a .gguf path | a HF directory | an s3:// URI
    dtype: str = "float32"


class RewardsCfg(_Stage):
    """Value classifiers: all-MiniLM-L6-v2 fine-tuned with one head per value (cmva.reward_training)."""

    use_mic_replies: bool = True  # also train on MIC replies (whole answers, like what is scored)
    other_foundation_negatives: bool = True  # rows about other foundations are negatives: rewards tell values apart
    finetune_encoder: bool = True  # False: the encoder stays frozen, only the heads train
    epochs: int = 3
    learning_rate: float = 5e-5  # encoder
    head_learning_rate: float = 1e-2
    batch_size: int = 32
    max_seq_length: int = 128  # tokens; actions and replies are far shorter
    max_train_texts: int | None = None  # a seeded subset (tiny test runs)


class LoraCfg(_Stage):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]


class AgentCfg(_Stage):
    """RL fine-tuning of one moral agent (TRL RLOO, KL penalty beta to the PT model)."""

    max_steps: int = 40
    learning_rate: float = 3e-4
    beta: float = 0.05  # KL coefficient: reward - beta * KL(policy || PT model)
    per_device_train_batch_size: int = 8
    num_generations: int = 4  # completions per prompt (RLOO baseline = mean of the others)
    max_completion_length: int = 48
    temperature: float = 0.9
    max_prompts: int | None = None  # cap on training questions (None: all MIC training questions)
    # "value": reward r_v (the paper); "contrast": r_v − mean of the other values' rewards (cmva.rewards.reward_function)
    reward: Literal["value", "contrast"] = "value"
    lora: LoraCfg = LoraCfg()
    extra: dict = {}  # any other trl.RLOOConfig field, passed through


class AggregatorCfg(_Stage):
    """Aggregator data (agent answers) + LoRA SFT (TRL SFTTrainer, loss on the answer tokens only)."""

    agent_max_new_tokens: int = 48
    max_rows: int | None = None  # MIC training questions (each gives 1 + onehot_profiles + graded_profiles rows)
    skip_zero_weight: bool = True  # agents with c_i = 0 are not run (cmva.prompts)
    onehot_profiles: int = 1  # per question, besides MIC's own profile (cmva.aggregator_data)
    graded_profiles: int = 3  # per question: all weights positive, so every agent's answer is shown
    drop_rate: float = 0.1  # share of rows missing one more answer at random, independently of c
    mic_tie_margin: float = 0.1  # MIC's answer is the target when its normalised c·r(y) is this close to the best
    goodness_weight: float = 1.0  # weight of mean z (general goodness) in the target score; 1 = (c / Σc)·z
    num_train_epochs: float = 2.0
    max_steps: int = -1
    learning_rate: float = 3e-4
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 768
    lora: LoraCfg = LoraCfg()
    extra: dict = {}


class EvalCfg(_Stage):
    max_new_tokens: int = 64
    max_rows: int | None = None
    batch_size: int = 16
    sensitivity_questions: int = 10
    sensitivity_profiles: int = 4
    paired_questions: int = 10  # questions answered under each one-hot profile e_v (paired profile test)
    baseline_probes: int | None = None  # graded probes also answered by prompt-aggregation / weighted merge (None: all)
    fewshot_examples: int = 5
    seed: int = 0


class Profile(_Stage):
    name: str
    values: list[str] = ["care", "fairness", "loyalty", "authority", "sanctity"]
    seed: int = 0
    base: BaseCfg = BaseCfg()
    rewards: RewardsCfg = RewardsCfg()
    agent: AgentCfg = AgentCfg()
    aggregator: AggregatorCfg = AggregatorCfg()
    evaluate: EvalCfg = EvalCfg()


PROFILES = ("smoke", "cpu", "paper")


def load_profile(name_or_path: str, overrides: dict | None = None) -> Profile:
    """Load a profile by name (shipped recipe) or from a YAML path, with dotted-key overrides.

    Example:
        >>> load_profile("smoke", {"agent.max_steps": 2}).agent.max_steps
        2
    """
    from pathlib import Path

    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = Path(__file__).parent / "recipes" / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown profile {name_or_path!r}; shipped profiles: {', '.join(PROFILES)}")
    data = yaml.safe_load(path.read_text()) or {}
    for key, val in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = val
    return Profile.model_validate(data)


class PlatformCfg(_Stage):
    """Kubernetes settings compiled into the KFP pipeline (kfp-kubernetes); GPU stages get the accelerator.

    Read from CMVA_* environment variables by `cmva pipeline compile|submit`, or from a YAML file.
    """

    image: str = "ghcr.io/cmva/cmva-train:0.1.0"
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_count: int = 1
    gpu_stages: list[str] = ["train-agent", "build-aggregator-data", "train-aggregator", "evaluate"]
    # Agents trained at once: 0 = all of them (each on its own GPU node). Local runs use 1: on one machine
    # parallel trainers only fight over the cores (measured: 2 RLOO agents at once on 2 cores, 391 s/step).
    agent_parallelism: int = Field(default=0, ge=0)
    node_selector: dict[str, str] = {"cmva.io/pool": "gpu"}
    tolerations: list[dict] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    cpu_request: str = "2"
    memory_request: str = "16Gi"
    memory_limit: str = "32Gi"
    s3_secret: str = "cmva-s3"  # Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, never a parameter
    s3_endpoint_url: str = "http://minio.cmva.svc.cluster.local:9000"
