"""Settings read from the environment.

Storage settings use the same variable names that KServe injects into a predictor from an S3 Secret
annotated with `serving.kserve.io/s3-endpoint` / `s3-usehttps` / `s3-verifyssl` / `s3-region`, so one
Secret configures training (KFP components), `cmva` on a laptop and the model servers alike.
"""

from __future__ import annotations

from typing import Literal, get_args
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, SecretStr
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
    # Secrets: shown as '**********' in reprs and logs; read only where the client is built.
    access_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID"))
    secret_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY"))
    region: str | None = Field(default=None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    # Every HTTP request to S3 ends within `request_bound_s()` (about 100 s with these defaults), even
    # against an endpoint that accepts connections and never answers: see there.
    max_retries: int = Field(default=3, ge=0, validation_alias=AliasChoices("CMVA_S3_MAX_RETRIES"))
    backoff_s: float = Field(default=0.5, ge=0, validation_alias=AliasChoices("CMVA_S3_BACKOFF_S"))
    backoff_max_s: float = Field(default=10.0, ge=0, validation_alias=AliasChoices("CMVA_S3_BACKOFF_MAX_S"))
    timeout_s: float = Field(default=5.0, gt=0, validation_alias=AliasChoices("CMVA_S3_TIMEOUT_S"))  # connect
    read_timeout_s: float = Field(default=20.0, gt=0, validation_alias=AliasChoices("CMVA_S3_READ_TIMEOUT_S"))

    def backoffs_s(self) -> list[float]:
        """The sleeps before each retry (urllib3: none before the first, then backoff · 2^(n-1), capped)."""
        return [
            0.0 if n == 1 else min(self.backoff_max_s, self.backoff_s * 2 ** (n - 1))
            for n in range(1, self.max_retries + 1)
        ]

    def request_bound_s(self) -> float:
        """Upper bound on one HTTP request to a stalled or unreachable endpoint, retries included.

        Each of the 1 + max_retries attempts waits at most `timeout_s` to connect (or to send a chunk)
        plus `read_timeout_s` for the answer's next bytes; between attempts the backoffs. A server's
        Retry-After is not honoured, so it cannot stretch the bound.
        """
        return (self.max_retries + 1) * (self.timeout_s + self.read_timeout_s) + sum(self.backoffs_s())

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
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator  # noqa: E402

# The dtypes a model generates in on a CPU too (serving's `--dtype`, `evaluate.dtype`; cmva.models.generation_dtype).
# float16-weights: CPU only, float32 compute over float16-packed linear weights (cmva.cpu_linear).
GenerationDtype = Literal["float32", "bfloat16", "float16-weights"]
GENERATION_DTYPES: tuple[str, ...] = get_args(GenerationDtype)


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a recipe is an error, not a silent default


class BaseCfg(_Stage):
    source: str = "smollm2"  # "tiny" | "smollm2" | a .gguf path | a HF directory | an s3:// URI
    # The dtype the base model is loaded in for training and generation (cmva.models.load_dtype): honoured on a GPU
    # ("auto": bfloat16 where supported); a CPU always loads float32 (the smoke and cpu results are float32 ones).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    # The engine's answers never repeat one of their own n-token sequences (0: off); saved with the imported base
    # (cmva.decoding), so evaluation, the aggregator's data and the servers all follow it (RL's samples do not).
    no_repeat_ngram_size: int = Field(0, ge=0)
    # The dtype the engine generates in on a CPU unless told otherwise (None: float32; float16-weights: float16
    # linear weights, cmva.cpu_linear); saved with the base like the rule above, so that what is evaluated is what
    # the servers answer. Training (RL, SFT) stays float32.
    cpu_dtype: GenerationDtype | None = None


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


SchedulerName = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
    "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay", "greedy",
]  # fmt: skip


class LoraCfg(_Stage):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]


class AgentCfg(_Stage):
    """RL fine-tuning of one moral agent (TRL RLOO, KL penalty beta to the PT model)."""

    max_steps: int = 40
    learning_rate: float = 3e-4
    # transformers' schedule names (its SchedulerType, checked by a test so a new transformers is noticed): "linear"
    # (TRL's default, decays to 0 at max_steps), "constant", "cosine", …; a wrong name fails when the recipe loads.
    lr_scheduler_type: SchedulerName = "linear"
    beta: float = 0.05  # KL coefficient: reward - beta * KL(policy || PT model)
    # Completions per micro-step over ALL processes (the name is TRL's; it is the per-device batch at one process):
    # × gradient_accumulation_steps (extra) = the global batch of one optimisation step, the same for any number of
    # processes (cmva.distributed.per_device_batch divides it by the world size).
    per_device_train_batch_size: int = 8
    num_generations: int = 4  # completions per prompt (RLOO baseline = mean of the others)
    num_iterations: int = 1  # optimisation passes over each generated batch (TRL's μ; PPO's "epochs per batch")
    max_completion_length: int = 48
    temperature: float = 0.9
    max_prompts: int | None = None  # cap on training questions (None: all MIC training questions)
    # "value": reward r_v (the paper); "contrast": r_v − mean of the other values' rewards (cmva.rewards.reward_function)
    reward: Literal["value", "contrast"] = "value"
    # Weight of a second reward, minus the share of the answer's word n-grams that repeat an earlier one
    # (cmva.rewards.repetition_reward): RL against a value classifier alone can buy reward with loops. 0: off.
    repetition_weight: float = Field(0.0, ge=0)
    # Checkpoint selection (cmva.agent_selection): every select_every steps from select_from (0: off, the last step is
    # kept), greedy answers to ≤ select_questions MIC dev questions are scored by the value's reward and the best
    # step's adapter is kept; select_patience > 0 stops training after that many judgements without a new best.
    select_every: int = Field(0, ge=0)
    select_from: int = Field(1, ge=1)
    select_patience: int = Field(0, ge=0)
    select_questions: int | None = Field(None, ge=1)
    lora: LoraCfg = LoraCfg()
    extra: dict = {}  # any other trl.RLOOConfig field, passed through
    seed: int | None = None  # None: the profile's seed
    # Settings of one value's agent that differ from the ones above, e.g. `{fairness: {seed: 2}}`: where a choice was
    # made per value (on the MIC dev questions, bench/agent_dev). Checked when the recipe loads (`for_value`). A nested
    # setting (lora, extra) given here replaces the shared one whole.
    per_value: dict[str, dict] = {}

    @model_validator(mode="after")
    def _check_per_value(self) -> AgentCfg:
        for value in self.per_value:
            self.for_value(value)
        return self

    def for_value(self, value: str) -> AgentCfg:
        """This value's agent settings: the shared ones with `per_value[value]` applied, validated like a recipe's.

        Raises:
            ValueError: an override nests `per_value`, names no agent setting or has a value of the wrong type;
                the message names `agent.per_value.<value>[.<setting>]`.
        """
        override = self.per_value.get(value, {})
        if "per_value" in override:
            raise ValueError(f"agent.per_value.{value}.per_value: per-value settings do not nest")
        merged = {**self.model_dump(exclude={"per_value"}), **override}
        try:
            return type(self).model_validate(merged)
        except ValidationError as e:
            where = ", ".join(".".join(map(str, err["loc"])) + f": {err['msg']}" for err in e.errors())
            raise ValueError(f"agent.per_value.{value}: {where}") from None


class AggregatorCfg(_Stage):
    """Aggregator data (agent answers) + LoRA SFT (TRL SFTTrainer, loss on the answer tokens only)."""

    agent_max_new_tokens: int = 48
    max_rows: int | None = None  # MIC training questions (each gives 1 + onehot_profiles + graded_profiles rows)
    skip_zero_weight: bool = True  # agents with c_i = 0 are not run (cmva.prompts)
    onehot_profiles: int = 1  # per question, besides MIC's own profile (cmva.aggregator_data)
    graded_profiles: int = 3  # per question: all weights positive, so every agent's answer is shown
    drop_rate: float = 0.1  # share of rows missing one more answer at random, independently of c
    mic_tie_margin: float = 0.1  # MIC's answer is the target when its normalised c·r(y) is this close to the best
    # rows whose candidates include MIC's answer: "all", or "own" (only the rows under MIC's own profile; the other
    # profiles' targets are always an agent's answer, the one the aggregator reads first)
    mic_candidate: Literal["all", "own"] = "all"
    goodness_weight: float = 1.0  # weight of mean z (general goodness) in the target score; 1 = (c / Σc)·z
    num_train_epochs: float = 2.0
    max_steps: int = -1
    learning_rate: float = 3e-4
    # Rows per micro-step over ALL processes (TRL's name; per-device at one process) × gradient_accumulation_steps
    # = the global batch, the same for any number of processes (cmva.distributed.per_device_batch).
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
    # the dtype every system generates in, on a CPU too (cmva.models.generation_dtype): the quality a server started
    # with `--dtype bfloat16` gives; None: the base's own on a CPU (`base.cpu_dtype`), else the run's `base.dtype`
    dtype: GenerationDtype | None = None


class GateCfg(_Stage):
    """Quality gate between evaluation and publishing (cmva.gate): what a run must reach to be served.

    Checks: CMVA-GS ROUGE-L ≥ the best baseline's + `rougeL_margin`; every agent's conformity to its value above
    the PT model's by more than `min_conformity_delta`. A metric that is missing or NaN fails its check.
    """

    enforce: bool = True  # False: the verdict is reported (metrics, Markdown) but publishing goes ahead
    rougeL_margin: float = 0.0
    baselines: list[str] = ["pt", "few-shot", "prompt-aggregation", "weighted-merge"]
    min_conformity_delta: float = 0.0


class Profile(_Stage):
    name: str
    values: list[str] = ["care", "fairness", "loyalty", "authority", "sanctity"]
    seed: int = 0
    base: BaseCfg = BaseCfg()
    rewards: RewardsCfg = RewardsCfg()
    agent: AgentCfg = AgentCfg()
    aggregator: AggregatorCfg = AggregatorCfg()
    evaluate: EvalCfg = EvalCfg()
    gate: GateCfg = GateCfg()  # decides publishing only: no artifact depends on it

    @model_validator(mode="after")
    def _check_agent_values(self) -> Profile:
        stray = sorted(set(self.agent.per_value) - set(self.values))
        if stray:
            raise ValueError(f"agent.per_value: {stray} are not values of this profile ({self.values})")
        return self

    def agent_for(self, value: str) -> AgentCfg:
        """The settings `value`'s agent trains with: `agent` with its `per_value` entry, the seed filled in."""
        cfg = self.agent.for_value(value)
        return cfg if cfg.seed is not None else cfg.model_copy(update={"seed": self.seed})


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
    return with_overrides(yaml.safe_load(path.read_text()) or {}, overrides)


def parse_sets(items: list[str] | None) -> dict:
    """`["agent.beta=0.2", "seed=1"]` → `{"agent.beta": 0.2, "seed": 1}`: the CLI's `--set key=value`, values read as
    YAML scalars.

    Raises:
        ValueError: If an item has no `=`.
    """
    import yaml

    out = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(val)
    return out


def with_overrides(data: dict | Profile, overrides: dict | None) -> Profile:
    """A profile (or its dict) with dotted-key overrides applied, validated."""
    data = data.model_dump() if isinstance(data, Profile) else data
    for key, val in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = val
    return Profile.model_validate(data)


class StageResources(_Stage):
    """What one pipeline stage's pod asks Kubernetes for."""

    cpu_request: str = "1"
    cpu_limit: str | None = None
    memory_request: str = "2Gi"
    memory_limit: str = "4Gi"
    timeout_s: int = Field(default=3600, ge=0)  # the pod's activeDeadlineSeconds; 0: none
    gpu: bool = False  # requests the accelerator (and the GPU node pool) unless the profile runs on CPU


# The platform's own steps (the stages declare theirs: cmva.stages); a platform file overrides any field per task.
STEP_RESOURCES: dict[str, StageResources] = {
    "collect-agents": StageResources(cpu_request="500m", memory_request="1Gi", memory_limit="2Gi", timeout_s=1800),
    "quality-gate": StageResources(cpu_request="250m", memory_request="512Mi", memory_limit="1Gi", timeout_s=600),
    "publish-for-serving": StageResources(
        cpu_request="1", memory_request="2Gi", memory_limit="4Gi", timeout_s=2 * 3600
    ),
    "promote": StageResources(cpu_request="1", memory_request="2Gi", memory_limit="4Gi", timeout_s=2 * 3600),
}


def task_resources() -> dict[str, StageResources]:
    """Default resources of every pipeline task: the stages' own (cmva.stages) and the platform steps'."""
    from cmva.stages import STAGES

    return {**{s.name: s.resources for s in STAGES}, **STEP_RESOURCES}


def distributed_stages() -> tuple[str, ...]:
    """Stages that can run data-parallel, hence as Kubeflow Trainer TrainJobs (cmva.stages: `distributed`)."""
    from cmva.stages import DISTRIBUTED

    return DISTRIBUTED


CPU_PROFILES = ("smoke", "cpu")  # recipes that train on CPU: their pipelines request no GPU


class TrainingCfg(_Stage):
    """How PlatformCfg's training stages run: one pod each (`pod`), or a multi-node Kubeflow Trainer v2 TrainJob
    (`trainjob`) created and waited on by a small launcher task (cmva.trainjob)."""

    mode: Literal["pod", "trainjob"] = "pod"
    stages: list[str] = Field(default_factory=lambda: list(distributed_stages()))  # TrainJobs in `trainjob` mode
    num_nodes: int = Field(default=2, ge=1)  # TrainJob spec.trainer.numNodes
    procs_per_node: int = Field(default=1, ge=1)  # spec.trainer.numProcPerNode: torchrun processes (GPUs) per node
    runtime: str = "cmva-torch-distributed"  # ClusterTrainingRuntime (manifests/trainer); "torch-distributed": stock
    # Inputs and outputs travel between the launcher and the nodes here (cmva.storage S3Store, one prefix per job)
    staging_uri: str = Field(default="s3://cmva/trainjobs", pattern=r"^s3://[^/]+")
    poll_s: float = Field(default=10.0, gt=0)  # seconds between status checks of the TrainJob

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if s not in distributed_stages()]
        if bad:
            raise ValueError(f"training.stages: {bad} cannot run as TrainJobs; stages that can: {distributed_stages()}")
        return value


class PlatformCfg(_Stage):
    """Kubernetes settings compiled into the KFP pipeline (kfp-kubernetes).

    Read from a YAML file (`--platform`) or CMVA_* environment variables by `cmva pipeline compile|submit`.
    """

    image: str = "ghcr.io/cmva/cmva-train:0.1.0"
    # Pin the image by digest (`sha256:…`): KFP caches a task by its image string, so a retagged image would
    # otherwise reuse results computed by older code.
    image_digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    image_pull_secrets: list[str] = []
    pod_labels: dict[str, str] = {"app.kubernetes.io/part-of": "cmva", "cmva.io/role": "pipeline"}
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_count: int = 1
    # None: GPU stages request the accelerator unless the profile is one of CPU_PROFILES; True/False: always/never.
    gpu: bool | None = None
    # Agents trained at once: 0 = all of them (each on its own GPU node). Local runs use 1: on one machine
    # parallel trainers only fight over the cores (measured: 2 RLOO agents at once on 2 cores, 391 s/step).
    agent_parallelism: int = Field(default=0, ge=0)
    node_selector: dict[str, str] = {"cmva.io/pool": "gpu"}  # GPU stages only
    tolerations: list[dict] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # Per task (keys of task_resources()); fields not given keep the task's defaults.
    resources: dict[str, StageResources] = {}
    retries: int = Field(default=2, ge=0)  # a failed task is retried this often (outputs are atomic: safe)
    retry_backoff: str = "60s"  # doubled after each retry
    display_names: bool = True  # `train-agent: care`…; KFP backends before 2.5 lose artifacts of renamed tasks
    # Secret in the namespace the pipelines run in (the Kubeflow profile's) with the read-write pipeline user's
    # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (README, KServe); keys are never pipeline parameters.
    s3_secret: str = "cmva-s3"
    # AWS_ENDPOINT_URL of every task; None: not set (kfp.local applies task env too: local runs keep the shell's)
    s3_endpoint_url: str | None = "http://minio.cmva.svc.cluster.local:9000"
    training: TrainingCfg = Field(
        default_factory=TrainingCfg
    )  # `mode: trainjob`: training stages as multi-node TrainJobs

    @field_validator("resources", mode="before")
    @classmethod
    def _merge_stage_defaults(cls, value):
        """A stage given in the platform file keeps its built-in defaults for the fields it does not set."""
        out, defaults = {}, task_resources()
        for stage, given in (value or {}).items():
            if stage not in defaults:
                raise ValueError(f"resources: unknown stage {stage!r}; stages: {', '.join(defaults)}")
            given = given.model_dump(exclude_unset=True) if isinstance(given, StageResources) else dict(given)
            out[stage] = {**defaults[stage].model_dump(), **given}
        return out

    def stage(self, name: str) -> StageResources:
        """The resources of stage `name`."""
        return self.resources.get(name) or task_resources()[name]

    def runs_as_trainjob(self, stage: str) -> bool:
        """Whether stage `stage` is launched as a Kubeflow Trainer TrainJob rather than run in its own pod."""
        return self.training.mode == "trainjob" and stage in self.training.stages

    def processes(self, stage: str, gpu: bool) -> int:
        """Training processes of a stage run in its own pod: one per accelerator it requests (data-parallel under
        torchrun, `cmva.distributed`), else 1."""
        return self.accelerator_count if gpu and stage in distributed_stages() and self.stage(stage).gpu else 1

    def uses_gpu(self, profile: str) -> bool:
        """Whether GPU stages request the accelerator for this profile (never for `smoke` and `cpu`)."""
        return self.gpu if self.gpu is not None else profile not in CPU_PROFILES

    def image_ref(self) -> str:
        """The image the tasks run: `image`, or `repository@digest` when `image_digest` pins it."""
        if not self.image_digest:
            return self.image
        repo = self.image.split("@", 1)[0]
        name_start = repo.rfind("/") + 1
        if ":" in repo[name_start:]:  # a tag (not a registry port)
            repo = repo[: name_start + repo[name_start:].index(":")]
        return f"{repo}@{self.image_digest}"
