"""Every option of the command line, declared once as an ``Annotated`` alias.

A command declares its parameters with these aliases (``tol: o.CurvatureTol =
CURVATURE.tol``); the shared ones (``--n/--num-samples``, ``--seed``, ``--batch-size``,
``--json``, ``--csv``, ``--data-root``, ...) are one alias each, so that they read, parse and
document the same on every command that takes them (``tests/cli/test_contract.py`` checks
it). Defaults that are a library setting are read from the options dataclasses, never
restated: :data:`CURVATURE` is ``CurvatureOptions()`` and so on (those classes import no
torch, so ``lcnn-audit --help`` stays fast).
"""

from pathlib import Path
from typing import Annotated

import typer

from ..attacks.options import AttackOptions
from ..bound.options import BoundOptions
from ..convert_options import ConvertOptions
from ..geometry.options import CurvatureOptions, GradRobustnessOptions
from ..training.config import AdversarialTraining, PenaltyConfig, TrainConfig

#: the library defaults the options below show (instances of the options classes)
CURVATURE = CurvatureOptions()
GRAD_ROBUSTNESS = GradRobustnessOptions()
ATTACK = AttackOptions()
BOUND = BoundOptions()
TRAIN = TrainConfig()
PENALTIES = PenaltyConfig()
ADVERSARIAL = AdversarialTraining()
CONVERT = ConvertOptions()

#: help panels
MODEL, DATA, OUTPUT, RUNTIME = "Model", "Data", "Output", "Runtime"
GEOMETRY, ROBUSTNESS, BOUND_PANEL, CONVERSION = "Geometry", "Gradient robustness", "Bound", "Conversion"
ATTACK_PANEL, AUTOATTACK, MIN_NORM, COUNTERS = "Attack", "AutoAttack", "DeepFool / C&W", "Masking checks and counters"
TRAINING, PENALTY_PANEL, ADV_TRAINING, RUN = "Training", "Penalties", "Adversarial training", "Run"


def opt(*names: str, help: str, panel: str | None = None, **kw):
    """``typer.Option`` with its help panel."""
    return typer.Option(*names, help=help, rich_help_panel=panel, **kw)


def comma(names) -> str:
    """A tuple of names as the CLI's comma-separated text (``("pgd",)`` -> ``pgd``)."""
    return ",".join(names)


# ---------------------------------------------------------------------------- help texts

SINGLE_SPLIT_HELP = ("Read an ImageFolder without train/ and test/ subfolders (class folders directly inside) as "
                     "the requested split; without it such a folder is refused, so that it never silently serves as "
                     "both splits.")
VERBOSE_HELP = ("Also print the library's log messages. Without a terminal (CI), progress is a plain line every "
                "$LCNN_AUDIT_HEARTBEAT seconds (default 15).")
THREADS_HELP = ("Torch intra-op CPU threads. Default: $OMP_NUM_THREADS if set, else the CPUs this process may "
                "use minus those the 1-minute load average says are busy (at least 1): on 2 shared cores, two "
                "threads made small batches 4-22x slower than one (docs/benchmarks.md).")
DATA_HELP = ("demo, cifar10, cifar100, mnist, fashion-mnist, svhn, an ImageFolder directory, or a .pt/.npz "
             "tensor file with x (N,C,H,W in [0,1]) and y.")

# ---------------------------------------------------------------------------- model

Checkpoint = Annotated[str | None, typer.Argument(
    help="Checkpoint file (.safetensors, .pt/.pth, TorchScript, .pt2) or 'demo' for the bundled model.",
    show_default=False)]
CheckpointOpt = Annotated[str | None, opt("--checkpoint", help="Same as the CHECKPOINT argument.", panel=MODEL,
                                          show_default=False)]
Arch = Annotated[str | None, opt("--arch", panel=MODEL, help=(
    "Architecture for weight-only checkpoints: torchvision name (resnet18), built-in (small_cnn), "
    "timm:NAME (needs timm), path/to/file.py:factory or package.module:factory."))]
ArchKwargs = Annotated[str | None, opt("--arch-kwargs", panel=MODEL,
                                       help="Factory keyword arguments, e.g. num_classes=100.")]
TrustCheckpoint = Annotated[bool, opt("--trust-checkpoint", panel=MODEL, help=(
    "Allow checkpoints that run code: a whole pickled nn.Module, TorchScript, a torch.export .pt2, and "
    "a safetensors recipe naming a file.py:factory or module:factory. Only for files from a source you "
    "trust (docs/security.md)."))]
Normalize = Annotated[str | None, opt("--normalize", panel=MODEL, help=(
    "Normalisation inside the model: none, dataset (the dataset's documented mean/std), a dataset "
    "name, or MEAN,STD numbers (m1,..,mC,s1,..,sC). Default: the checkpoint's recipe, else none."))]
OutputKey = Annotated[str | None, opt("--output-key", panel=MODEL, help=(
    "Select the logits from a model that returns a dict/object (key or attribute) or tuple (index)."))]
StateKey = Annotated[str | None, opt("--state-key", panel=MODEL,
                                     help="Key of the state dict inside a nested .pt checkpoint.")]

# ---------------------------------------------------------------------------- data (shared)

Data = Annotated[str, opt("--data", panel=DATA, help=DATA_HELP)]
DataRoot = Annotated[Path | None, opt("--data-root", panel=DATA, help=(
    "Where named datasets live (default ./data; fashion-mnist also looks in /usr/share/datasets/fashion-mnist)."))]
Split = Annotated[str, opt("--split", panel=DATA, help="train or test (train is read without augmentation).")]
SingleSplit = Annotated[bool, opt("--single-split", panel=DATA, help=SINGLE_SPLIT_HELP)]
N = Annotated[int | None, opt("--n", "--num-samples", panel=DATA, help=(
    "Use a seeded random subset of N samples (finetune: of the training samples). Default: all samples of the "
    "split (under torchrun write --num-samples: torchrun reads --n as an abbreviation of its own options)."))]
Seed = Annotated[int, opt("--seed", panel=DATA, help="Seed for the subset and all random draws.")]
BatchSize = Annotated[int, opt("--batch-size", panel=DATA, help="Samples per batch.", min=1)]
Download = Annotated[bool, opt("--download", panel=DATA, help="Download a named dataset if missing (needs internet).")]
Device = Annotated[str, opt("--device", panel=DATA, help="auto, cpu, cuda or cuda:K.")]

# ---------------------------------------------------------------------------- output and runtime (shared)

Json = Annotated[Path | None, opt("--json", panel=OUTPUT, help="Write the result JSON here (atomically).")]
Csv = Annotated[Path | None, opt("--csv", panel=OUTPUT, help=(
    "Write the result's rows as CSV (one per sample; finetune: one per epoch)."))]
Quiet = Annotated[bool, opt("--quiet", "-q", panel=OUTPUT, help="Print only the result paths (gate: and the verdict "
                                                                "line).")]
Verbose = Annotated[bool, opt("--verbose", "-v", panel=OUTPUT, help=VERBOSE_HELP)]
Resume = Annotated[bool, opt("--resume", panel=OUTPUT, help=(
    "Continue an interrupted run from <json>.partial (needs --json; per-batch progress is saved there)."))]
Threads = Annotated[int | None, opt("--threads", panel=RUNTIME, help=THREADS_HELP, min=1, show_default=False)]

# ---------------------------------------------------------------------------- curvature

CurvatureTarget = Annotated[str, opt("--target", panel=GEOMETRY, help=(
    "f = cross-entropy at the label (loss) or the label's logit."))]
CurvatureLabel = Annotated[str, opt("--label", panel=GEOMETRY, help="Label for f: the true label or the predicted "
                                                                    "class.")]
CurvatureMethod = Annotated[str, opt("--method", panel=GEOMETRY, help=(
    "auto, lanczos, power, reference (the LCNN paper's code, biased low; use --iters 10) or gauss-newton (exact for "
    "piecewise-linear nets)."))]
CurvatureTol = Annotated[float, opt("--tol", panel=GEOMETRY, help="Lanczos relative residual tolerance.")]
CurvatureAtol = Annotated[float, opt("--atol", panel=GEOMETRY, help="Absolute residual floor.")]
CurvatureMaxIter = Annotated[int, opt("--max-iter", panel=GEOMETRY, help="Maximum Lanczos steps (HVPs) per sample.")]
CurvatureIters = Annotated[int, opt("--iters", panel=GEOMETRY, help="Power-iteration steps (--method power / "
                                                                    "reference).")]
CurvatureProfile = Annotated[int, opt("--profile", panel=GEOMETRY, help=(
    "Also report the K eigenvalues largest in magnitude (CURE Fig. 2)."))]
CurvatureFdH = Annotated[float | None, opt("--fd-h", panel=GEOMETRY, help=(
    "Also report CURE's finite difference ‖∇f(x+hz)−∇f(x)‖ at step h."))]
CurvatureEps = Annotated[float, opt("--eps", panel=GEOMETRY, help="ε in C = ‖∇²f‖/(‖∇f‖+ε).")]
CurvatureFroProbes = Annotated[int, opt("--fro-probes", panel=GEOMETRY, help="Hutchinson probes for the Frobenius "
                                                                              "remainder.")]
CurvatureJacobian = Annotated[str, opt("--jacobian", panel=GEOMETRY, help=(
    "Jacobian measures: auto (exact up to 32 classes, else estimated), exact, estimate or off."))]
CurvatureSmoothRelu = Annotated[float | None, opt("--smooth-relu", panel=GEOMETRY, help=(
    "Measure with ReLUs replaced by softplus(BETA), as the paper's baseline (1000)."))]
CurvatureDtype = Annotated[str, opt("--dtype", panel=GEOMETRY, help="float32, or float64 for validation.")]
CurvatureExamples = Annotated[int, opt("--examples", panel=OUTPUT, min=0, help=(
    "Keep the K most curved samples' input, gradient and top Hessian eigenvector in the JSON (for the report; "
    "0: off)."))]
CURVATURE_EXAMPLES = 6  # the CLI's own setting (the library keeps no examples unless asked)
SaveImages = Annotated[Path | None, opt("--save-images", panel=OUTPUT, help=(
    "Write a PNG grid of the --examples most curved samples into this directory."))]

# ---------------------------------------------------------------------------- grad-robustness, discrepancy

Compare = Annotated[list[str] | None, opt("--compare", panel=ROBUSTNESS, help=(
    "Further checkpoints to compare (repeat the option); they share --arch/--normalize."))]
Radii = Annotated[str | None, opt("--radii", panel=ROBUSTNESS, help=(
    "Comma-separated noise norms (default: 9 log-spaced in [1e-3, 1e-1])."))]
Draws = Annotated[int, opt("--draws", panel=ROBUSTNESS, help="Random directions per sample.")]
Adversarial = Annotated[bool, opt("--adversarial/--no-adversarial", panel=ROBUSTNESS, help=(
    "Also find the worst gradient change on each sphere."))]
AdvSteps = Annotated[int, opt("--adv-steps", panel=ROBUSTNESS, help="Projected ascent steps for --adversarial.")]
RobustnessPlot = Annotated[Path | None, opt("--plot", panel=ROBUSTNESS, help="Write a log-log PNG of the curves.")]
RobustnessTarget = Annotated[str, opt("--target", panel=ROBUSTNESS, help="f: loss or logit (as in curvature).")]
RobustnessSmoothRelu = Annotated[float | None, opt("--smooth-relu", panel=ROBUSTNESS, help=(
    "Measure with ReLU -> softplus(BETA)."))]
TrainData = Annotated[str | None, opt("--train-data", panel=DATA, help=(
    "Training data if not --data's train split (e.g. a tensor file)."))]
DiscrepancyTarget = Annotated[str, opt("--target", panel=GEOMETRY, help="f: loss or logit.")]
DiscrepancySmoothRelu = Annotated[float | None, opt("--smooth-relu", panel=GEOMETRY, help=(
    "Measure with ReLU -> softplus(BETA)."))]

# ---------------------------------------------------------------------------- attack

Attacks = Annotated[str, opt("--attack", "--attacks", panel=ATTACK_PANEL, help=(
    "Comma-separated: pgd, fgsm, deepfool, cw, autoattack."))]
Norms = Annotated[str, opt("--norm", "--norms", panel=ATTACK_PANEL, help=(
    "Comma-separated threat models: l2, linf, l1 (l1: autoattack only; deepfool and cw: l2 only)."))]
Eps = Annotated[list[str] | None, opt("--eps", panel=ATTACK_PANEL, help=(
    "Eps sweep, all computed in one run: 0.05,0.1,0.15,0.2 (every norm) or NORM=LIST for one norm (repeatable); "
    "fractions like 8/255 work. Default: l2 0.05,0.1,0.15,0.2 (LCNN Table 2), linf 1/255,2/255,4/255,8/255, l1 "
    "3,6,12."))]
Steps = Annotated[int, opt("--steps", panel=ATTACK_PANEL, help="PGD steps.", min=1)]
Restarts = Annotated[int, opt("--restarts", panel=ATTACK_PANEL, help="PGD random restarts (the best is kept per "
                                                                     "sample).", min=1)]
StepSize = Annotated[float | None, opt("--step-size", panel=ATTACK_PANEL, help=(
    "PGD fixed step size (default 2.5·eps/steps with --step-rule fixed)."))]
StepRule = Annotated[str | None, opt("--step-rule", panel=ATTACK_PANEL, help=(
    "PGD step-size rule: apgd (adaptive step and momentum, Croce & Hein 2020; the default) or fixed (the default "
    "with --step-size)."))]
RandomStart = Annotated[bool, opt("--random-start/--no-random-start", panel=ATTACK_PANEL, help="PGD random start.")]
Loss = Annotated[str, opt("--loss", panel=ATTACK_PANEL, help="PGD/FGSM objective: ce (cross-entropy) or margin "
                                                             "(C&W margin).")]
MaskingChecks = Annotated[bool, opt("--masking-checks/--no-masking-checks", panel=ATTACK_PANEL, help=(
    "Run the extra gradient-masking checks: PGD with 4x the steps at the middle eps, and PGD at the box "
    "diameter; the Indicators of Attack Failure that need extra runs; a small Square attack on every "
    "--check-every-th input."))]
Eot = Annotated[int, opt("--eot", panel=COUNTERS, min=1, help=(
    "Counter for randomised models: average each gradient of the adaptive PGD over N forward passes (EOT)."))]
Bpda = Annotated[str | None, opt("--bpda", panel=COUNTERS, help=(
    "Counter for non-differentiable parts: comma-separated submodule names (as in model.named_modules()) whose "
    "backward pass is the identity in the adaptive PGD (BPDA)."))]
AutoMargin = Annotated[bool, opt("--auto-margin/--no-auto-margin", panel=COUNTERS, help=(
    "Run the adaptive margin-loss PGD on inputs whose cross-entropy gradient is exactly zero (saturated)."))]
CheckEvery = Annotated[int, opt("--check-every", panel=COUNTERS, min=1, help=(
    "The restart and Square checks run on every N-th input (by dataset index)."))]
SquareQueries = Annotated[int, opt("--square-queries", panel=COUNTERS, min=1, help=(
    "Queries of the black-box Square check."))]
Version = Annotated[str, opt("--version", panel=AUTOATTACK, help=(
    "AutoAttack version: standard, plus, rand, or custom (with --aa-attacks)."))]
AaAttacks = Annotated[str | None, opt("--aa-attacks", panel=AUTOATTACK, help=(
    "Sub-attacks for --version custom: apgd-ce, apgd-dlr, fab, square, apgd-t, fab-t."))]
AaNIter = Annotated[int | None, opt("--aa-n-iter", panel=AUTOATTACK, help=(
    "Shrink APGD/FAB iterations (quick runs; not standard AutoAttack numbers)."))]
AaNQueries = Annotated[int | None, opt("--aa-n-queries", panel=AUTOATTACK, help="Shrink Square's queries (quick "
                                                                                "runs).")]
DfSteps = Annotated[int, opt("--df-steps", panel=MIN_NORM, help="DeepFool iterations.")]
Overshoot = Annotated[float, opt("--overshoot", panel=MIN_NORM, help="DeepFool overshoot.")]
Candidates = Annotated[int, opt("--candidates", panel=MIN_NORM, help="DeepFool candidate classes (incl. the label).")]
CwSteps = Annotated[int, opt("--cw-steps", panel=MIN_NORM, help="C&W Adam steps per binary-search round.")]
CwSearchSteps = Annotated[int, opt("--cw-search-steps", panel=MIN_NORM, help="C&W binary-search rounds over the "
                                                                             "constant c.")]
CwLr = Annotated[float, opt("--cw-lr", panel=MIN_NORM, help="C&W Adam learning rate.")]
CwConfidence = Annotated[float, opt("--cw-confidence", panel=MIN_NORM, help="C&W confidence margin κ.")]
CwInitialConst = Annotated[float, opt("--cw-initial-const", panel=MIN_NORM, help="C&W initial constant c.")]
AttackPlot = Annotated[Path | None, opt("--plot", panel=OUTPUT, help=(
    "Draw robust accuracy against eps (CURE Fig. 6) to this image file (.png, .pdf, .svg)."))]
SaveAdv = Annotated[Path | None, opt("--save-adv", panel=OUTPUT, help=(
    "Save the adversarial examples as safetensors (x, x_adv_<norm>, first_eps_<norm>, attack_<norm>)."))]
AttackExamples = Annotated[int | None, opt("--examples", panel=OUTPUT, min=0, help=(
    "Keep K adversarial examples in the JSON (the most curved of the samples broken at the smallest eps): input, "
    "gradient, top Hessian eigenvector, adversarial example, perturbation. Default: 6 with --save-images, else 0."))]
AttackSaveImages = Annotated[Path | None, opt("--save-images", panel=OUTPUT, help=(
    "Write a PNG grid of those examples into this directory."))]

# ---------------------------------------------------------------------------- bound, convert (model-building data)

InputShape = Annotated[str | None, opt("--input-shape", panel=DATA, help=(
    "Input size C,H,W without the batch dim (e.g. 3,32,32), when no --data is given."))]
ShapeData = Annotated[str | None, opt("--data", panel=DATA, help=(
    "demo, cifar10, cifar100, mnist, fashion-mnist, svhn, an ImageFolder directory, or a .pt/.npz tensor file: "
    "gives the input size (one batch) and the clean accuracy before and after."))]
ShapeSplit = Annotated[str, opt("--split", panel=DATA, help="train or test.")]
LambdaBeta = Annotated[float, opt("--lambda-beta", panel=BOUND_PANEL, help="λβ of the LCNN penalty (eq. 5).")]
LambdaGamma = Annotated[float, opt("--lambda-gamma", panel=BOUND_PANEL, help="λγ of the LCNN penalty (eq. 5).")]
BoundTol = Annotated[float, opt("--tol", panel=BOUND_PANEL, help="Relative residual certificate of the operator "
                                                                 "norms.")]
BoundMaxIter = Annotated[int, opt("--max-iter", panel=BOUND_PANEL, min=1, help="Most operator products per operator "
                                                                               "norm.")]

ConvertOutput = Annotated[Path, opt("--output", "-o", panel=CONVERSION, help=(
    "Write the converted model here (.safetensors with its recipe; every command loads it)."))]
Activations = Annotated[bool, opt("--activations/--no-activations", panel=CONVERSION, help=(
    "Replace activations (modules and functional calls) by centered softplus (LCNN eq. 4)."))]
Kinds = Annotated[str | None, opt("--kinds", panel=CONVERSION, help=(
    "Activation kinds to replace, comma-separated: relu, relu6, leaky_relu, gelu, silu, elu, softplus "
    "(default: all)."))]
BetaInit = Annotated[float, opt("--beta-init", panel=CONVERSION, help=(
    "Initial β of every centered softplus (curvature bound β; larger is closer to ReLU)."))]
Batchnorm = Annotated[bool, opt("--batchnorm/--no-batchnorm", panel=CONVERSION, help=(
    "Replace BatchNorm1d/2d by γ-Lipschitz batch norm (LCNN §3.4.2)."))]
GammaInit = Annotated[float | None, opt("--gamma-init", panel=CONVERSION, help=(
    "Initial γ (> 1) of every γ-Lipschitz batch norm. Default: max(‖BN‖₂, 2) per layer, which keeps the "
    "layer's function; the paper's snippet uses 11."))]
Conv = Annotated[bool, opt("--conv/--no-conv", panel=CONVERSION, help=(
    "Spectrally normalise convolutions on their real input size (LCNN §3.4.1)."))]
Linear = Annotated[bool, opt("--linear/--no-linear", panel=CONVERSION, help="Spectrally normalise Linear layers.")]
FoldBn = Annotated[bool, opt("--fold-bn/--no-fold-bn", panel=CONVERSION, help=(
    "Fold each layer's 1/σ into the batch norm it feeds, so the pair keeps its eval-mode function."))]
PowerIterations = Annotated[int, opt("--power-iterations", panel=CONVERSION, min=0, help=(
    "Power-iteration steps per training forward pass."))]
ConvertTol = Annotated[float, opt("--tol", panel=CONVERSION, help=(
    "Relative residual at which the spectral norms count as converged."))]
ConvertMaxIter = Annotated[int, opt("--max-iter", panel=CONVERSION, min=1, help="Most operator products per spectral "
                                                                                "norm.")]
Fx = Annotated[bool, opt("--fx/--no-fx", panel=CONVERSION, help=(
    "Use torch.fx to convert functional activations and give shared activation modules one module per call site."))]


# ---------------------------------------------------------------------------- finetune

FinetuneOut = Annotated[Path, opt("--out", "-o", panel=RUN, help=(
    "Write the trained model here (.safetensors with its recipe; loads in every command)."))]
FromScratch = Annotated[bool, opt("--from-scratch", panel=RUN, help=(
    "Train --arch from initialisation instead of fine-tuning CHECKPOINT."))]
ConvertFirst = Annotated[bool, opt("--convert", panel=RUN, help=(
    "Convert to an LCNN first (centered softplus, γ-Lipschitz batch norm, spectral norms; see lcnn-audit convert). "
    "With --from-scratch: train the LCNN architecture."))]
RunDir = Annotated[Path | None, opt("--run-dir", panel=RUN, help=(
    "Checkpoint and JSON log folder (default: OUT without suffix + '.run')."))]
FinetuneResume = Annotated[bool, opt("--resume", panel=RUN, help=(
    "Continue the run in --run-dir exactly where it stopped (same options required)."))]
TrainingData = Annotated[str, opt("--data", panel=DATA, help=(
    "Training data (its train split; test accuracy and curvature use its test split): demo, fashion-mnist, "
    "cifar10, ... or a .pt/.npz file."))]
TestData = Annotated[str | None, opt("--test-data", panel=DATA, help=(
    "Evaluate on this data instead of --data's test split; needed when --data has no splits (a tensor file, or a "
    "--single-split folder)."))]
EvalN = Annotated[int | None, opt("--eval-n", panel=DATA, help=(
    "Test accuracy on a seeded subset of N test samples (default: all)."))]
CurvatureN = Annotated[int, opt("--curvature-n", panel=DATA, min=0, help=(
    "Test samples audited for mean curvature after every epoch (0: off)."))]
Epochs = Annotated[int, opt("--epochs", panel=TRAINING, help="Epochs to train.", min=0)]
Optimizer = Annotated[str, opt("--optimizer", panel=TRAINING, help="sgd (with momentum), adam or adamw.")]
Lr = Annotated[float | None, opt("--lr", panel=TRAINING, help=(
    "Learning rate (default 0.1 with --from-scratch, 0.01 when fine-tuning; as TrainConfig(lr=None) in Python)."))]
Momentum = Annotated[float, opt("--momentum", panel=TRAINING, help="SGD momentum.")]
WeightDecay = Annotated[float, opt("--weight-decay", panel=TRAINING, help="Weight decay (not applied to LCNN β, γ).")]
Schedule = Annotated[str, opt("--schedule", panel=TRAINING, help="multistep, cosine or constant (applied per step).")]
Milestones = Annotated[str | None, opt("--milestones", panel=TRAINING, help=(
    "Epochs at which multistep multiplies the lr by --lr-decay (default: 75%,87.5% of --epochs)."))]
LrDecay = Annotated[float, opt("--lr-decay", panel=TRAINING, help="Multistep decay factor.")]
Augment = Annotated[str, opt("--augment", panel=TRAINING, help=(
    "auto (crop+flip for 32x32 RGB, none otherwise), none, flip, crop or crop-flip."))]
Lcnn = Annotated[bool, opt("--lcnn", panel=PENALTY_PANEL, help=(
    "LCNN penalty λβ·Σβ + λγ·Σlog γ with the paper's λβ=1e-4, λγ=1e-5 (needs a converted model)."))]
PenaltyLambdaBeta = Annotated[float | None, opt("--lambda-beta", panel=PENALTY_PANEL, help="λβ of the LCNN "
                                                                                           "penalty.")]
PenaltyLambdaGamma = Annotated[float | None, opt("--lambda-gamma", panel=PENALTY_PANEL, help="λγ of the LCNN "
                                                                                             "penalty.")]
Gradreg = Annotated[float, opt("--gradreg", panel=PENALTY_PANEL, help="λ of GradReg λ‖∇ₓℓ‖² (paper: 1e-3).")]
Cure = Annotated[float, opt("--cure", panel=PENALTY_PANEL, help="λ of CURE λ‖∇ℓ(x+hz)−∇ℓ(x)‖² (CURE paper: 4).")]
CureH = Annotated[float, opt("--cure-h", panel=PENALTY_PANEL, help="CURE step h (L2, [0,1] pixels).")]
CureHWarmup = Annotated[float, opt("--cure-h-warmup", panel=PENALTY_PANEL, help="Epochs over which h ramps up from "
                                                                                "0.")]
JacobianPenalty = Annotated[float, opt("--jacobian", panel=PENALTY_PANEL, help="λ of Jacobian regularisation "
                                                                               "λ‖J‖_F².")]
JacobianProbes = Annotated[int, opt("--jacobian-probes", panel=PENALTY_PANEL, min=0, help="Random projections (0: "
                                                                                          "exact).")]
CrossLipschitz = Annotated[float, opt("--cross-lipschitz", panel=PENALTY_PANEL, help=(
    "λ of cross-Lipschitz regularisation λν²."))]
CrossLipschitzProbes = Annotated[int, opt("--cross-lipschitz-probes", panel=PENALTY_PANEL, min=0, help=(
    "Random projections (0: exact)."))]
AdvTrain = Annotated[str | None, opt("--adv-train", panel=ADV_TRAINING, help=(
    "PGD adversarial training in this norm: l2 or linf."))]
AdvEps = Annotated[float, opt("--adv-eps", panel=ADV_TRAINING, help="Attack radius (paper: L2 0.1).")]
AdvTrainSteps = Annotated[int, opt("--adv-steps", panel=ADV_TRAINING, help="PGD steps (paper: 3).")]
AdvStepSize = Annotated[float | None, opt("--adv-step-size", panel=ADV_TRAINING, help=(
    "PGD step size (default: the attack's)."))]
Compile = Annotated[bool, opt("--compile", panel=TRAINING, help=(
    "Run the centred-softplus layers on torch.compile'd kernels (about a minute to compile once; falls back to "
    "eager, with a note, where compiling fails)."))]

# ---------------------------------------------------------------------------- gate, report, demo

Policy = Annotated[Path, typer.Argument(help="The policy YAML: model, data, audits and checks.",
                                        metavar="POLICY.yaml", show_default=False)]
MoreResults = Annotated[list[Path] | None, typer.Argument(
    help="More result files, as if each had --results (so that --results runs/*.json works).",
    metavar="RESULT.json", show_default=False)]
Results = Annotated[list[Path] | None, opt("--results", show_default=False, help=(
    "Check these existing result files (--json of curvature, attack, grad-robustness, discrepancy, bound; a "
    "directory means its *.json) instead of running the audits."))]
VerdictJson = Annotated[Path | None, opt("--json", panel=OUTPUT, help="Write the verdict JSON here.")]
Junit = Annotated[Path | None, opt("--junit", panel=OUTPUT, help="Write JUnit XML here (one testcase per check).")]
Markdown = Annotated[Path | None, opt("--markdown", panel=OUTPUT, help=(
    "Write a Markdown summary here (append it to $GITHUB_STEP_SUMMARY)."))]
SaveResults = Annotated[Path | None, opt("--save-results", panel=OUTPUT, help=(
    "Write each audit's result JSON into this directory (for `lcnn-audit report`, or a later --results run)."))]
NoRegression = Annotated[bool, opt("--no-regression", help=(
    "Skip the relative_to checks and read no baseline (to create the first baseline with --json or "
    "--save-results)."))]
TrustPolicy = Annotated[bool, opt("--trust-policy", help=(
    "Allow the policy's model.arch to name code (file.py:factory, package.module:factory) and its "
    "model.trust_checkpoint: only for a policy you wrote or reviewed."))]

ReportInputs = Annotated[list[Path], typer.Argument(
    help="Result files (--json of curvature, attack, grad-robustness, discrepancy, bound) and gate verdicts (gate "
         "--json). Several runs of one command are compared side by side.", metavar="RUN.json", show_default=False)]
ReportOutput = Annotated[Path, opt("--output", "-o", show_default=False, help=(
    "report.html (self-contained, images embedded) or report.md (images in report_files/)."))]
ReportLabel = Annotated[list[str] | None, opt("--label", show_default=False, help=(
    "Name of each result file's model in the tables, in order (default: the checkpoint name)."))]
ReportTitle = Annotated[str, opt("--title", help="Report title.")]
Plots = Annotated[bool, opt("--plots/--no-plots", help="Draw the figures.")]

DemoOut = Annotated[Path, opt("--out", "-o", help="Directory for the results.")]
DemoN = Annotated[int, opt("--n", help="Samples of the bundled test sample to audit.")]
