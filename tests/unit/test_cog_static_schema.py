"""The Python port of Cog's static schema generator (tests/cog_static_schema.py) behaves like the Go code.

Cases come from replicate/cog's pkg/schema/python/*_test.go and pkg/schema/openapi_spec_test.go; the exact JSON
shapes follow pkg/schema/openapi_spec.go. The "dropped" cases pin Cog's silent losses, so the port keeps them.
"""

import textwrap

import pytest

from tests.cog_static_schema import StaticSchemaError, generate_openapi, parse


def schemas(source: str, target: str = "Runner", **kwargs) -> dict:
    return parse(textwrap.dedent(source), target, **kwargs)


def inputs(source: str, target: str = "Runner", **kwargs) -> dict:
    return schemas(source, target, **kwargs)["Input"]


def error(source: str, target: str = "Runner", **kwargs) -> StaticSchemaError:
    with pytest.raises(StaticSchemaError) as excinfo:
        schemas(source, target, **kwargs)
    return excinfo.value


def runner(params: str, header: str = "", returns: str = "str") -> str:
    """A Runner whose run() takes `params`, after module-level `header` lines."""
    return f"from cog import BaseRunner, Input, Path, Secret\n{textwrap.dedent(header)}\n" \
        f"class Runner(BaseRunner):\n    def run(self, {params}) -> {returns}:\n        pass\n"


# --- accepted forms and the JSON they produce ----------------------------------------------------------------------


def test_simple_runner_and_exact_component_shape():
    assert schemas(runner("s: str")) == {
        "Input": {
            "properties": {"s": {"title": "S", "type": "string", "x-order": 0}},
            "required": ["s"],
            "title": "Input",
            "type": "object",
        },
        "Output": {"title": "Output", "type": "string"},
    }


def test_multiple_inputs_with_defaults_and_bounds():  # TestMultipleInputsWithDefaults
    schema = inputs(runner(
        'image: Path = Input(description="Grayscale input image"), '
        'scale: float = Input(description="Factor to scale image by", ge=0, le=10, default=1.5)',
        returns="Path",
    ))
    assert schema["properties"] == {
        "image": {"description": "Grayscale input image", "format": "uri", "title": "Image", "type": "string", "x-order": 0},
        "scale": {
            "default": 1.5, "description": "Factor to scale image by", "maximum": 10, "minimum": 0,
            "title": "Scale", "type": "number", "x-order": 1,
        },
    }
    assert schema["required"] == ["image"]
    # Go map keys are marshalled sorted; the port keeps that order.
    assert list(schema["properties"]["scale"]) == sorted(schema["properties"]["scale"])


@pytest.mark.parametrize("annotation", ["Optional[str]", "str | None", "typing.Optional[str]", "Union[str, None]"])
def test_optional_input_is_nullable_with_null_default(annotation):  # TestOptionalInputPipeNone / TestOptionalInputTyping
    source = runner(f"name: {annotation} = Input(default=None)", header="import typing\nfrom typing import Optional, Union")
    schema = inputs(source)
    assert schema["properties"]["name"] == {"default": None, "nullable": True, "title": "Name", "type": "string", "x-order": 0}
    assert "required" not in schema


def test_optional_input_without_default_is_not_required():  # TestOptionalInputOpenAPINotRequired
    schema = inputs(runner("value: Optional[str]", header="from typing import Optional"))
    assert schema["properties"]["value"] == {"nullable": True, "title": "Value", "type": "string", "x-order": 0}
    assert "required" not in schema


def test_none_default_on_a_required_type_is_no_default():  # TestNoneDefaultOnRequiredTypeIsRequired
    schema = inputs(runner("seed: int = Input(default=None)"))
    assert schema["properties"]["seed"] == {"title": "Seed", "type": "integer", "x-order": 0}
    assert schema["required"] == ["seed"]


def test_secret_with_none_default_is_optional():  # TestSecretWithDefaultNoneIsOptional
    prop = inputs(runner("api_key: Secret = Input(default=None)"))["properties"]["api_key"]
    assert prop == {
        "default": None, "format": "password", "nullable": True, "title": "Api Key", "type": "string",
        "writeOnly": True, "x-cog-secret": True, "x-order": 0,
    }


def test_union_inputs():  # TestOpenAPIUnionInputStringFloat / TestOpenAPIRequiredNullableUnionInput
    schema = inputs(runner("value: str | float, other: str | float | None"))
    assert schema["properties"]["value"] == {
        "anyOf": [{"type": "string"}, {"type": "number"}], "title": "Value", "x-order": 0,
    }
    assert schema["properties"]["other"]["anyOf"] == [{"nullable": True, "type": "string"}, {"nullable": True, "type": "number"}]
    assert schema["required"] == ["value", "other"]
    assert "union" in str(error(runner("value: Path | str")))


def test_list_and_dict_inputs():
    source = runner('paths: list[str] = Input(description="P"), meta: dict = Input(default={"b": 1, "a": [2]})')
    props = inputs(source)["properties"]
    assert props["paths"] == {"description": "P", "items": {"type": "string"}, "title": "Paths", "type": "array", "x-order": 0}
    assert props["meta"] == {"default": {"a": [2], "b": 1}, "title": "Meta", "type": "object", "x-order": 1}


def test_choices_become_an_enum_component_named_after_the_parameter():  # TestChoicesGenerateEnum
    result = schemas(runner('color: str = Input(choices=["red", "green"], default="red", description="Color")'))
    assert result["Input"]["properties"]["color"] == {
        "allOf": [{"$ref": "#/components/schemas/color"}], "default": "red", "description": "Color", "x-order": 0,
    }
    assert result["color"] == {"description": "An enumeration.", "enum": ["red", "green"], "title": "color", "type": "string"}
    assert list(result) == ["Input", "Output", "color"]


@pytest.mark.parametrize(
    "header, expr, expected",
    [
        ('MY_CHOICES = ["x", "y"]', "MY_CHOICES", ["x", "y"]),  # TestChoicesModuleLevelListVar
        ('T = ("x", "y")', "T", ["x", "y"]),  # a module-level tuple is stored as a list
        ('AR = {"1:1": (1024, 1024), "16:9": (1344, 768)}', "list(AR.keys())", ["1:1", "16:9"]),  # TestChoicesListDictKeys
        ('L = {"fast": "Fast Mode"}', "list(L.values())", ["Fast Mode"]),  # TestChoicesListDictValues
        ('S = {"small": 256}', 'list(S.keys()) + ["custom"]', ["small", "custom"]),  # TestChoicesDictKeysPlusLiteral
        ('BASE = ["a", "b"]\nEXTRA = ["c"]', "BASE + EXTRA", ["a", "b", "c"]),  # TestChoicesConcatTwoVars
    ],
)
def test_choices_resolved_from_module_scope(header, expr, expected):
    assert schemas(runner(f"x: str = Input(choices={expr})", header=header))["x"]["enum"] == expected


def test_integer_choices_enum_type():  # TestIntegerChoices / TestChoicesIntegerDictKeys
    result = schemas(runner("steps: int = Input(choices=list(STEPS.keys()), default=1)", header='STEPS = {1: "one", 4: "four"}'))
    assert result["steps"]["enum"] == [1, 4] and result["steps"]["type"] == "integer"


@pytest.mark.parametrize(
    "header, expr",
    [
        ('NOT_A_LIST = "oops"', "NOT_A_LIST"),  # TestChoicesVarNotAListErrors
        ("", "UNDEFINED"),  # TestChoicesUndefinedVarErrors
        ("", "get_choices()"),  # TestChoicesArbitraryCallErrors
        ("", '[f"{i}x" for i in range(5)]'),  # TestChoicesListComprehensionErrors
        ("", '("a", "b")'),  # a tuple literal is not a list
        ('S = {"a", "b"}', "S"),  # a module-level set is not a list
        ("", '[\n        "a",  # first\n        "b",\n    ]'),  # a comment is a named child of the list node
    ],
)
def test_unresolvable_choices_fail_the_build(header, expr):
    err = error(runner(f"x: str = Input(choices={expr})", header=header))
    assert err.kind == "ErrChoicesNotResolvable"
    assert str(err) == "parameter 'x': choices expression cannot be statically resolved"


def test_module_level_constants_resolve_in_the_same_file():  # TestDefaultModuleLevel*, TestDescriptionFromModuleLevelVar
    header = 'DEFAULT_RATIO = "1:1"\nSTEPS = 50\nTAGS = ["a"]\nDESC = "Number of steps."\nLIMIT: int = 3\nNEG = -2.5'
    props = inputs(runner(
        "ar: str = Input(default=DEFAULT_RATIO), steps: int = Input(default=STEPS, description=DESC), "
        "tags: list[str] = Input(default=TAGS), text: str = DEFAULT_RATIO, limit: int = LIMIT, neg: float = NEG",
        header=header,
    ))["properties"]
    assert [props[k]["default"] for k in props] == ["1:1", 50, ["a"], "1:1", 3, -2.5]
    assert props["steps"]["description"] == "Number of steps."


def test_input_registry_attribute_and_method():  # TestInputRegistryAttribute / TestInputRegistryMethod
    source = """
        from dataclasses import dataclass
        from cog import BaseRunner, Input

        RATIOS = {"1:1": (1024, 1024), "16:9": (1344, 768)}

        @dataclass(frozen=True)
        class Inputs:
            ar = Input(description="Aspect ratio", choices=list(RATIOS.keys()), default="1:1")

            @staticmethod
            def guidance(default: float) -> Input:
                return Input(description="Guidance scale", ge=0.0, le=20.0, default=default)

        class Runner(BaseRunner):
            def run(self, ar: str = Inputs.ar, guidance_scale: float = Inputs.guidance(7.5)) -> str:
                pass
    """
    result = schemas(source)
    assert result["Input"]["properties"]["ar"]["default"] == "1:1"
    assert result["ar"]["enum"] == ["1:1", "16:9"]
    assert result["Input"]["properties"]["guidance_scale"] == {
        "default": 7.5, "description": "Guidance scale", "maximum": 20, "minimum": 0,
        "title": "Guidance Scale", "type": "number", "x-order": 1,
    }


def test_literal_forms():  # TestNegativeNumberDefault, TestBoolDefault, TestDeprecatedInput, TestInputConstraints
    props = inputs(runner(
        "temp: float = Input(default=-1.5), flag: bool = Input(default=True), old: str = Input(deprecated=True, default='x'), "
        'text: str = Input(min_length=1, max_length=100, regex="^[a-z]+$"), big: int = Input(default=1_000, ge=-5, le=0x10), '
        "ratio: float = 2.0"
    ))["properties"]
    assert props["temp"]["default"] == -1.5 and props["flag"]["default"] is True and props["old"]["deprecated"] is True
    assert (props["text"]["minLength"], props["text"]["maxLength"], props["text"]["pattern"]) == (1, 100, "^[a-z]+$")
    # Go's ParseFloat rejects 0x10, so that bound is dropped; 2.0 is written as 2 by Go's encoder.
    assert props["big"]["default"] == 1000 and props["big"]["minimum"] == -5 and "maximum" not in props["big"]
    assert props["ratio"]["default"] == 2 and isinstance(props["ratio"]["default"], int)


def test_parameter_order_titles_and_untyped_parameters():  # TestParameterOrdering
    props = inputs(runner("alpha_beta: str, untyped, gamma: float = Input(default=1.0), *args, **kwargs"))["properties"]
    assert list(props) == ["alpha_beta", "gamma"]  # an untyped parameter without a default is skipped silently
    assert (props["alpha_beta"]["title"], props["gamma"]["x-order"]) == ("Alpha Beta", 1)


def test_accept():  # TestAcceptMimeType / TestAcceptOnNonFileTypeErrors
    assert inputs(runner('image: Path = Input(accept="image/*")'))["properties"]["image"]["x-cog-accept"] == "image/*"
    assert str(error(runner('s: str = Input(accept="image/*")'))) == "accept is only valid on Path or File inputs (parameter 's')"


def test_future_annotations_and_typing_spelling_do_not_matter():
    plain = runner("a: Optional[int] = None, b: List[str] = Input(default=[])", header="from typing import List, Optional")
    future = "from __future__ import annotations\n" + plain
    qualified = runner("a: typing.Optional[int] = None, b: typing.List[str] = Input(default=[])", header="import typing")
    quoted = runner('a: "Optional[int]" = None, b: "List[str]" = Input(default=[])', header="from typing import List, Optional")
    assert schemas(plain) == schemas(future) == schemas(qualified) == schemas(quoted)


def test_base_class_is_not_checked_and_functions_work():  # TestNonBasePredictor / TestStandaloneFunction
    assert inputs("class Predictor:\n    def predict(self, text: str = 'hello') -> str: ...\n", "Predictor")["properties"]
    source = 'from cog import Input\ndef predict(text: str = Input(default="world")) -> str:\n    return text\n'
    assert inputs(source, "predict")["properties"]["text"]["default"] == "world"


def test_run_is_preferred_and_predict_is_the_legacy_fallback(capsys):  # TestRunMethodPreferredOverLegacyPredict
    both = "class Runner:\n    def predict(self, v: int) -> int: ...\n    def run(self, v: str) -> str: ...\n"
    assert inputs(both)["properties"]["v"]["type"] == "string"
    assert inputs("class Runner:\n    def predict(self, v: int) -> int: ...\n")["properties"]["v"]["type"] == "integer"
    assert "Runner.predict() is deprecated; use run() instead" in capsys.readouterr().err


def test_inherited_run_in_the_same_file():  # TestRunnerWithInheritedRun / TestRunnerWithInheritedRunAndDirectPredictUsesRun
    source = """
        class Shared:
            def run(self, s: str) -> str: ...
        class Runner(Shared):
            def predict(self, s: int) -> int: ...
    """
    assert inputs(source)["properties"]["s"]["type"] == "string"


def test_run_inherited_from_another_local_file(tmp_path):  # TestRunnerWithImportedInheritedRun / TestParsePipeline...
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "flux.py").write_text(textwrap.dedent("""
        from cog import BaseRunner, Input
        DESCRIPTION = "from the base module"
        class FluxLoraRunner(BaseRunner):
            def run(self, prompt: str = Input(description=DESCRIPTION)) -> str: ...
    """))
    child = "from shared.flux import FluxLoraRunner\nclass Runner(FluxLoraRunner):\n    pass\n"
    prop = inputs(child, source_dir=str(tmp_path), source_path="deployments/x/predict.py")["properties"]["prompt"]
    assert prop["description"] == "from the base module"  # the base file's own constants resolve
    qualified = "import shared.flux\nfrom shared import flux\nclass Runner(flux.FluxLoraRunner):\n    pass\n"
    assert "prompt" in inputs(qualified, source_dir=str(tmp_path))["properties"]
    # Without the project directory (or if shared/ is outside it) the base class cannot be opened.
    assert str(error(child)) == "Runner must define run() or predict()"


def test_outputs():  # TestIteratorOutput, TestConcatenateIteratorOutput, TestBaseModelOutput, TestListOutput
    iterator = schemas(runner("n: int", header="from typing import Iterator", returns="Iterator[str]"))["Output"]
    assert iterator == {"items": {"type": "string"}, "title": "Output", "type": "array", "x-cog-array-type": "iterator"}
    concat = schemas(runner("n: int", header="from cog import ConcatenateIterator", returns="ConcatenateIterator[str]"))["Output"]
    assert concat == {
        "items": {"type": "string"}, "title": "Output", "type": "array",
        "x-cog-array-display": "concatenate", "x-cog-array-type": "iterator",
    }
    model = "from pydantic import BaseModel\nclass Out(BaseModel):\n    text: str\n    score: float | None = None"
    assert schemas(runner("n: int", header=model, returns="Out"))["Output"] == {
        "properties": {
            "text": {"title": "Text", "type": "string"},
            "score": {"nullable": True, "title": "Score", "type": "number"},
        },
        "required": ["text"], "title": "Output", "type": "object",
    }
    assert schemas(runner("n: int", returns="list[Path]"))["Output"]["items"] == {"format": "uri", "type": "string"}


def test_rejected_outputs():  # TestOptionalOutputErrors, TestConcatenateIteratorNotStrErrors, TestMissingReturnType
    assert error(runner("n: int", returns="str | None")).kind == "ErrOptionalOutput"
    assert str(error(runner("n: int", header="from cog import ConcatenateIterator", returns="ConcatenateIterator[int]"))) == (
        "ConcatenateIterator element type must be str, got int"
    )
    err = error("class Runner:\n    def run(self, s: str):\n        pass\n")
    assert (err.kind, str(err)) == ("ErrMissingReturnType", "run")


def test_streaming_needs_the_cog_decorator():  # TestStreamingDecorator*
    def post(decorator, header="import cog\nfrom typing import Iterator"):
        source = f"{header}\nclass Runner:\n    {decorator}\n    def run(self) -> Iterator[str]:\n        yield ''\n"
        return generate_openapi(source, "Runner")["paths"]["/predictions"]["post"]

    assert post("@cog.streaming")["x-cog-streaming"] is True
    assert post("@streaming()", header="from cog import streaming\nfrom typing import Iterator")["x-cog-streaming"] is True
    assert "x-cog-streaming" not in post("")  # an Iterator alone does not stream
    assert "x-cog-streaming" not in post("@streaming", header="from other import streaming\nfrom typing import Iterator")
    class_level = (
        "import cog\nfrom typing import Iterator\n@cog.streaming\nclass Runner:\n    def run(self) -> Iterator[str]: ...\n"
    )
    assert "x-cog-streaming" not in generate_openapi(class_level, "Runner")["paths"]["/predictions"]["post"]
    assert "@streaming requires" in str(error("import cog\nclass Runner:\n    @cog.streaming\n    def run(self) -> str: ..."))


def test_concurrency_needs_async():  # TestConcurrentDecoratorRequiresAsyncForMaxGreaterThanOne
    source = "import cog\nclass Runner:\n    @cog.concurrent(max=2)\n    def run(self) -> str: ..."
    assert str(error(source)) == "@concurrent(max > 1) requires an async run() or predict() method"
    assert inputs(source.replace("    def run", "    async def run")) is not None


def test_full_document_and_train_mode():
    doc = generate_openapi(runner("s: str"), "Runner")
    assert (doc["openapi"], doc["info"]) == ("3.0.2", {"title": "Cog", "version": "0.22.0"})
    assert list(doc["components"]["schemas"])[:2] == ["Input", "Output"]
    train = parse("class T:\n    def train(self, n: int) -> str: ...\n", "T", mode="train")
    assert list(train) == ["TrainingInput", "TrainingOutput"] and train["TrainingInput"]["title"] == "TrainingInput"


# --- rejected forms: Cog fails the build with these messages ---------------------------------------------------------


@pytest.mark.parametrize(
    "params, header, message",
    [
        ("prompt: str = inputs.PROMPT", "from shared import inputs",
         "parameter 'prompt': default `inputs.PROMPT` cannot be statically resolved"),
        ("prompt: str = PROMPT", "from shared.inputs import PROMPT",  # imported constants are never followed
         "parameter 'prompt': default `PROMPT` cannot be statically resolved"),
        ('prompt: str = cog.Input(description="x")', "import cog",  # only `Input`, or a name imported as cog's Input
         "parameter 'prompt': default `cog.Input(description=\"x\")` cannot be statically resolved"),
        ("text: str = UNDEFINED_VAR", "", "parameter 'text': default `UNDEFINED_VAR` cannot be statically resolved"),
        ('text: str = f"x{1}"', "", "parameter 'text': default `f\"x{1}\"` cannot be statically resolved"),
        ('text: str = ("a"\n  "b")', "", "parameter 'text': default `(\"a\"\n  \"b\")` cannot be statically resolved"),
        ("steps: int = Inputs.missing", "", "parameter 'steps': default `Inputs.missing` cannot be statically resolved"),
        ("items: list[str] = Input(default_factory=list)", "",  # TestDefaultFactoryError
         "parameter 'items': default_factory is not supported in static schema generation"),
        ('s="hello"', "", "parameter 's' on run has no type annotation"),  # TestMissingTypeAnnotation
        ("*args: int", "", "typed_parameter has no identifier"),
        ("x: tuple", "", "unsupported type: tuple"),
        ("x: np.ndarray", "import numpy as np",
         "cannot resolve type 'ndarray' (imported from 'numpy') - external types cannot be statically analyzed. "
         "If this is a JSON-shaped third-party type, mark it opaque with `from typing import Annotated`, "
         "`from cog import Opaque`, and `field: Annotated[ndarray, Opaque]`. "
         "Otherwise define it as a BaseModel subclass in your predict file, or provide a .pyi stub"),
        ('x: Annotated[str, Field(description="x")]', "from typing import Annotated",
         "unsupported type: generic_type: Annotated[str, Field(description=\"x\")]"),
    ],
)
def test_rejected_inputs(params, header, message):
    assert str(error(runner(params, header=header))) == message


def test_target_errors():  # TestPredictorNotFound / TestRunnerWithNoRunOrPredictErrors
    err = error("class Other:\n    def run(self) -> str: ...\n", "Predictor")
    assert (err.kind, str(err)) == ("ErrPredictorNotFound", "Predictor")
    assert str(error("class Runner:\n    def setup(self) -> None: ...\n")) == "Runner must define run() or predict()"


def test_infinite_bound_fails_json_encoding():
    assert str(error(runner("x: float = Input(ge=-inf)"))) == "json: unsupported value: -Inf"


# --- silently dropped: the build passes but the schema loses it ------------------------------------------------------


def test_dropped_description_forms():
    props = inputs(runner(
        'a: str = Input(description=f"max {MAX}"), '  # f-string
        'b: str = Input(description=("Parenthesised " "text")), '  # parenthesised (implicit concatenation over lines)
        "c: str = Input(description=inputs.DESC), "  # attribute of an imported module
        "d: str = Input(description=DESC), "  # name imported from another module
        "e: str = Input(description=str(MAX))",
        header="MAX = 4\nfrom shared import inputs\nfrom shared.inputs import DESC",
    ))["properties"]
    assert all("description" not in prop for prop in props.values())


def test_dropped_bounds_and_constraints():
    props = inputs(runner(
        "w: int = Input(default=8, **SIDE), "  # **kwargs are never looked into
        "h: int = Input(default=8, ge=MIN_SIDE, le=MAX_SIDE), "  # bounds must be number literals
        "g: float = Input(default=1.0, ge=(0), le=1 + 1), "
        "r: str = Input(regex=PATTERN, default='a')",  # regex must be a literal too
        header='MIN_SIDE = 256\nMAX_SIDE = 1024\nSIDE = dict(ge=MIN_SIDE, le=MAX_SIDE)\nPATTERN = "^a$"',
    ))["properties"]
    assert {key for prop in props.values() for key in prop} == {"default", "title", "type", "x-order"}


def test_unresolvable_input_default_becomes_none():
    """Input(default=<imported or computed>) does not fail: the default silently becomes None, so the input turns
    required (or, if Optional, defaults to null)."""
    schema = inputs(runner(
        "prompt: str = Input(default=inputs.PROMPT), steps: int = Input(default=2 * 4), "
        "maybe: Optional[str] = Input(default=inputs.PROMPT)",
        header="from typing import Optional\nfrom shared import inputs",
    ))
    assert "default" not in schema["properties"]["prompt"] and "default" not in schema["properties"]["steps"]
    assert schema["required"] == ["prompt", "steps"]
    assert schema["properties"]["maybe"]["default"] is None


def test_adjacent_string_literals_keep_the_inner_quotes():
    """parseStringLiteral strips one character at each end of the raw text, so "a" "b" reads as `a" "b`."""
    props = inputs(runner(
        'a: str = Input(description="Use " "this."), b: str = "x" "y", c: str = Input(default=\'p\' "q"), '
        'd: str = Input(description="""Line one\n        line two"""), e: str = Input(description="It\'s a \\"quote\\"\\n")'
    ))["properties"]
    assert props["a"]["description"] == 'Use " "this.'
    assert props["b"]["default"] == 'x" "y'
    assert props["c"]["default"] == "p' \"q"
    assert props["d"]["description"] == "Line one\n        line two"  # triple quotes: raw text, newlines kept
    assert props["e"]["description"] == 'It\'s a \\"quote\\"\\n'  # escapes are not decoded


def test_parenthesised_string_defaults():
    props = inputs(runner('a: str = Input(default=("x")), b: str = Input(default="x")'))["properties"]
    assert "default" not in props["a"] and props["b"]["default"] == "x"
