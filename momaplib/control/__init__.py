"""Motion DSL and planners (paper §3.4.2): fine-grained motion control without a text condition.

- ``dsl``: the ``MotionDSL`` (per patch and window, directional words), its JSON form validated
  against ``DSL_SCHEMA``, its pixel form, ``dsl_from_momap`` and ``dsl_accuracy``;
- ``schema``: the JSON Schema and the error messages that name the offending field;
- ``planners``: (image, instance map, prompt) -> ``MotionDSL``: ``OraclePlanner`` (from the GT
  MoMap, the upper bound) and ``RulePlanner`` (the kit's task vocabulary, transparent rules);
- ``prompts``: the ``RulePlanner``'s parser (action, objects by colour and shape words, direction);
- ``vlm``: ``VLMPlanner``, an image-text-to-text transformers model prompted in context with the
  schema and ground-truth examples, whose answers are validated before anyone uses them.

See ``docs/motion_dsl.md`` for the DSL, the pixel form and what each planner assumes.
"""

from momaplib.control.dsl import (
    DEFAULT_FPS,
    DEFAULT_WINDOW,
    DSLValidationError,
    MotionDSL,
    PatchMotion,
    dsl_accuracy,
    dsl_from_momap,
    instance_labels,
    patch_centroids,
    window_bounds,
    window_frames,
)
from momaplib.control.paraphrase import paraphrase_prompt
from momaplib.control.planners import (
    ACT_PHASES,
    OraclePlanner,
    Planner,
    PlannerError,
    RulePlanner,
    TableFrame,
    camera_frame,
    fit_table_frame,
)
from momaplib.control.prompts import ParsedPrompt, PromptError, is_agent, parse_prompt, resolve_object
from momaplib.control.schema import AXES, AXIS_WORDS, DSL_SCHEMA
from momaplib.control.vlm import InContextExample, VLMPlanner, examples_from_momaps, extract_json_object

__all__ = [
    "ACT_PHASES",
    "AXES",
    "AXIS_WORDS",
    "DEFAULT_FPS",
    "DEFAULT_WINDOW",
    "DSL_SCHEMA",
    "DSLValidationError",
    "InContextExample",
    "MotionDSL",
    "OraclePlanner",
    "ParsedPrompt",
    "PatchMotion",
    "Planner",
    "PlannerError",
    "PromptError",
    "RulePlanner",
    "TableFrame",
    "VLMPlanner",
    "camera_frame",
    "dsl_accuracy",
    "dsl_from_momap",
    "examples_from_momaps",
    "extract_json_object",
    "fit_table_frame",
    "instance_labels",
    "is_agent",
    "paraphrase_prompt",
    "parse_prompt",
    "patch_centroids",
    "resolve_object",
    "window_bounds",
    "window_frames",
]
