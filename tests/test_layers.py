"""Layer names of the deploy graph mapped back to the model's own module names."""

from drsn_edge.layers import (
    assign_modules,
    block_of,
    in_shrinkage,
    onnx_node_module,
    tflite_tensor_module,
)

# real names: ONNX export scopes and litert-torch tensor names of the shipped model's deploy graph
_U0 = "drsn_edge.models.deploy.DeployNet/torch.nn.modules.container.Sequential_units/drsn_edge.models.deploy.DeployUnit_0"
_SHRINK0 = _U0 + "/drsn_edge.backends.tflite.tflite_deploy_module.<locals>.TFLiteThreshold_shrink"


def test_onnx_node_names():
    assert onnx_node_module("/units/units.3/shrink/fc2/Conv") == "units.3.shrink.fc2"
    assert onnx_node_module("/units/units.11/conv1_bn2/Conv") == "units.11.conv1_bn2"
    assert onnx_node_module("/stem/Conv_output_0_nchwc") == "stem"
    assert onnx_node_module("/units/units.2/shrink/Relu_output_0_nchwc") == "units.2.shrink"
    assert onnx_node_module("/fc/Gemm") == "fc"
    assert onnx_node_module("/Unsqueeze") == ""


def test_tflite_tensor_names():
    assert tflite_tensor_module("drsn_edge.models.deploy.DeployNet/torch.nn.modules.conv.Conv2d_stem;2") == "stem"
    # a shared tensor named by a container and a layer: the layer wins
    assert tflite_tensor_module(f"{_U0};;{_U0}/torch.nn.modules.conv.Conv2d_bn1_affine;1") == "units.0.bn1_affine"
    assert tflite_tensor_module(f"{_SHRINK0}/torch.nn.modules.conv.Conv2d_fc2;2") == "units.0.shrink.fc2"
    assert tflite_tensor_module(f"{_SHRINK0};;{_U0};1") == "units.0.shrink"
    assert tflite_tensor_module("drsn_edge.models.deploy.DeployNet;1") == ""
    assert tflite_tensor_module("serving_default_output_0_output") == ""


def test_blocks_and_shrinkage():
    assert [block_of(m) for m in ("stem", "units.3.conv2", "units.10.shrink.fc1_bn", "head_bn_affine", "fc", "op 7")] == [
        "stem", "units.3", "units.10", "head", "head", "unmapped"]
    assert in_shrinkage("units.3.shrink.fc2") and in_shrinkage("units.3.shrink")
    assert not in_shrinkage("units.3.conv2") and not in_shrinkage("stem")


def test_every_op_gets_a_place_in_execution_order():
    # root ops before the units belong to the stem, after them to the head; a later op named after an
    # earlier unit (a scope a shared tensor kept) stays in the block that is running
    got = assign_modules(["", "stem", "units.0.conv2", "units.1.conv2", "units.0", "head_bn_affine", "units.1", "", "fc"])
    assert got == ["stem", "stem", "units.0.conv2", "units.1.conv2", "units.1.conv2", "head_bn_affine",
                   "head_bn_affine", "head", "fc"]
