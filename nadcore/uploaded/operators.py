"""The operators an uploaded network may use: the allow-list, as data, in one place.

`nadcore.uploaded.untrusted` refuses an archive whose graphs (every method of a TorchScript module,
inlined; every node of a torch.export program and its subgraphs) call anything not listed
here, naming the operator. Names are the dispatcher's `namespace::name` without the overload
(`aten::conv2d` covers `aten::conv2d.default` and `aten::conv2d.padding`); Python callables
that torch.export records for symbolic sizes are listed by module and name.

What is here is what networks are made of: arithmetic, comparisons, matrix products,
convolutions, activations, normalizations, attention, pooling, dropout (and the random numbers
it draws), shape and indexing ops, tensor creation, and TorchScript's control flow and
list/tuple plumbing. What is not here is refused: file I/O (`aten::from_file`, `aten::save`),
anything that calls back into Python (`prim::PythonOp`), printing, custom classes, distributed
and RPC ops, and every operator not listed.

`tests/nadcore/uploaded/test_untrusted.py` checks that the five built-in architectures and a
sample of torchvision classifiers that covers the operators of every family, scripted and
exported, pass (`scripts/check_operator_allowlist.py` walks all 80). An operator missing here
that a real network needs is added to the right group below, never by namespace.
"""

from __future__ import annotations

ARITHMETIC = """
abs abs_ add add_ addcdiv addcmul addmm addmv baddbmm bmm ceil clamp clamp_ clamp_max
clamp_max_ clamp_min clamp_min_ clip cos cosh cumsum div div_ dot einsum erf exp exp_ expm1
floor floor_divide fmod frac lerp log log10 log1p log2 logsumexp matmul mm mul mul_ mv neg
neg_ norm pow pow_ prod reciprocal remainder round rsqrt rsub sign sin sinh sqrt sqrt_
square sub sub_ sum tan tensordot true_divide trunc var var_mean std std_mean mean amax amin
max min maximum minimum argmax argmin linalg_vector_norm frobenius_norm where lt le gt ge eq
ne logical_and logical_not logical_or logical_xor bitwise_and bitwise_not bitwise_or floordiv
__and__ __or__ __xor__
isfinite isnan isinf any all sort topk cumprod diff
"""

LINEAR_AND_CONVOLUTION = """
linear bilinear conv1d conv2d conv3d convolution _convolution conv_transpose1d
conv_transpose2d conv_transpose3d
"""

ACTIVATIONS = """
relu relu_ relu6 leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ gelu gelu_ silu silu_
mish mish_ hardswish hardswish_ hardsigmoid hardsigmoid_ hardtanh hardtanh_ softplus
softsign sigmoid sigmoid_ tanh tanh_ threshold threshold_ prelu _prelu_kernel glu softmax
log_softmax _softmax _log_softmax logsigmoid hardshrink softshrink tanhshrink
"""

NORMALIZATION = """
batch_norm native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training
_native_batch_norm_legit_functional _batch_norm_with_update _batch_norm_no_update
_batch_norm_impl_index cudnn_batch_norm layer_norm native_layer_norm group_norm
native_group_norm instance_norm rms_norm _fused_rms_norm local_response_norm
"""

POOLING = """
max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices
max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d _adaptive_avg_pool3d
adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d lp_pool2d
"""

DROPOUT = """
dropout dropout_ feature_dropout feature_dropout_ alpha_dropout alpha_dropout_
native_dropout bernoulli bernoulli_ rand rand_like randn randn_like
"""

ATTENTION = """
scaled_dot_product_attention _scaled_dot_product_attention_math
_scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_flash_attention
_scaled_dot_product_efficient_attention _scaled_dot_product_cudnn_attention
_native_multi_head_attention
"""

SHAPE_AND_INDEXING = """
view view_as reshape reshape_as _unsafe_view flatten unflatten permute transpose transpose_
t contiguous squeeze squeeze_ unsqueeze unsqueeze_ expand expand_as repeat cat concat
concatenate stack hstack vstack split split_with_sizes tensor_split chunk unbind select
slice slice_scatter select_scatter index index_select gather narrow roll flip clone detach
alias pad constant_pad_nd reflection_pad1d reflection_pad2d replication_pad1d
replication_pad2d upsample_nearest1d upsample_nearest2d upsample_bilinear2d
upsample_bicubic2d _upsample_nearest_exact2d _upsample_bilinear2d_aa pixel_shuffle
pixel_unshuffle channel_shuffle native_channel_shuffle size dim numel stride
sym_size sym_numel sym_stride sym_storage_offset as_strided movedim moveaxis swapaxes
masked_fill masked_fill_ index_put index_put_ copy_ fill_ zero_ __getitem__ len
__is__ __isnot__ __not__ __contains__ list append _set_item __range_length __derive_index
format warn _assert _assert_async _assert_scalar _assert_tensor_metadata
sym_constrain_range sym_constrain_range_for_size _functional_sym_constrain_range
_functional_assert_async
"""

CREATION_AND_CONVERSION = """
zeros zeros_like ones ones_like full full_like empty empty_like new_zeros new_ones new_full
new_empty new_empty_strided empty_strided arange linspace scalar_tensor tensor to _to_copy
type_as Int Float Bool IntImplicit FloatImplicit ScalarImplicit item _local_scalar_dense
lift_fresh lift_fresh_copy detach_ requires_grad_ type float int bool copy
is_floating_point is_autocast_enabled is_grad_enabled
"""

# TorchScript's own plumbing: constants, attributes, control flow, lists and tuples.
TORCHSCRIPT = """
prim::Constant prim::GetAttr prim::SetAttr prim::If prim::Loop prim::ListConstruct
prim::ListUnpack prim::TupleConstruct prim::TupleUnpack prim::TupleIndex
prim::DictConstruct prim::DictIndex prim::unchecked_cast prim::unchecked_unwrap_optional
prim::RaiseException prim::Uninitialized prim::device prim::dtype prim::layout
prim::NumToTensor prim::min prim::max prim::requires_grad prim::is_cuda prim::isinstance
prim::shape prim::data prim::grad prim::abs prim::TupleSlice prim::is_nested prim::type
"""

# Python callables torch.export records for symbolic sizes and multi-output ops.
PYTHON_CALLABLES = """
_operator.getitem _operator.add _operator.sub _operator.mul _operator.floordiv
_operator.truediv _operator.mod _operator.neg _operator.eq _operator.ne _operator.lt
_operator.le _operator.gt _operator.ge _operator.pow torch.sym_float torch.sym_int
torch.sym_max torch.sym_min torch.sym_not torch._sym_sqrt math.ceil math.floor
"""

# torch.export's structured control flow; its subgraphs are checked like the main graph. They
# load, and validation then refuses them (state_writes.control_flow_in_program): the
# engine's activation profile cannot run them, and their condition is one for the batch.
HIGHER_ORDER = "higher_order::cond higher_order::while_loop higher_order::map_impl"

_ATEN_GROUPS = (ARITHMETIC, LINEAR_AND_CONVOLUTION, ACTIVATIONS, NORMALIZATION, POOLING,
                DROPOUT, ATTENTION, SHAPE_AND_INDEXING, CREATION_AND_CONVERSION)

ALLOWED_OPERATORS: frozenset[str] = frozenset(
    {f"aten::{name}" for group in _ATEN_GROUPS for name in group.split()}
    | set(TORCHSCRIPT.split()) | set(PYTHON_CALLABLES.split()) | set(HIGHER_ORDER.split())
)


def is_allowed(operator: str) -> bool:
    """True when `operator` (`namespace::name`, or `module.name` for a Python callable) is
    one that networks are made of."""
    return operator in ALLOWED_OPERATORS
