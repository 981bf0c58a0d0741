//! The edge between the pipeline and tract: loading, planning and running.

use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::error::{InferenceError, ModelError};

/// A planned, optimised model ready to run; cheap to share between threads.
pub(crate) type Plan = Arc<TypedRunnableModel>;

/// Parses ONNX bytes. Shape annotations in the file are ignored so the input
/// can be re-declared at any size.
pub(crate) fn parse(model: &str, bytes: &[u8]) -> Result<InferenceModel, ModelError> {
    tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true)
        .model_for_read(&mut &*bytes)
        .map_err(|e| tract_error(model, e))
}

/// Fixes the input to `shape` (f32), folds constant weights, optimises and
/// plans the model.
pub(crate) fn plan(model: &str, graph: InferenceModel, shape: &[usize]) -> Result<Plan, ModelError> {
    graph
        .with_input_fact(0, f32::fact(shape).into())
        .and_then(|g| g.into_typed())
        .and_then(|g| g.into_decluttered())
        .and_then(|mut g| {
            fold_constants(&mut g)?;
            Ok(g)
        })
        .and_then(|g| g.into_optimized())
        .and_then(|g| g.into_runnable())
        .map_err(|e| tract_error(model, e))
}

/// Evaluates every node whose inputs are all constants and replaces it by its
/// value. tract's own constant propagation skips folds whose output is larger
/// than 4 MiB, which leaves weight-only quantized models (int8 weights cast
/// and scaled in-graph) dequantizing their large convolutions on every run —
/// 11x slower for the dlib embedder. Weights are loaded once; fold them all.
fn fold_constants(graph: &mut TypedModel) -> TractResult<()> {
    loop {
        let mut folded = false;
        for id in graph.eval_order()? {
            let Some(patch) = fold_node(graph, id)? else {
                continue;
            };
            patch.apply(graph)?;
            folded = true;
            break;
        }
        if !folded {
            return graph.compact();
        }
    }
}

/// The patch replacing node `id` by its constant value, if all its inputs are
/// constants and it can be evaluated outside a plan.
fn fold_node(graph: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    use tract_onnx::tract_core::ops::konst::Const;
    use tract_onnx::tract_core::ops::source::TypedSource;

    let node = graph.node(id);
    if node.op_is::<Const>() || node.op_is::<TypedSource>() || node.inputs.is_empty() {
        return Ok(None);
    }
    let facts = graph.node_input_facts(id)?;
    let Some(inputs) = facts.iter().map(|f| f.konst.clone().map(|k| k.into_tvalue())).collect::<Option<TVec<_>>>()
    else {
        return Ok(None);
    };
    let Ok(Some(outputs)) = node.op.eval_out_of_plan(inputs) else {
        return Ok(None);
    };
    let mut patch = TypedModelPatch::default();
    for (slot, value) in outputs.into_iter().enumerate() {
        let name = format!("{}.folded.{slot}", node.name);
        let wire = patch.wire_node(name, Const::new(value.into_arc_tensor())?, &[])?[0];
        patch.shunt_outside(graph, OutletId::new(id, slot), wire)?;
    }
    Ok(Some(patch))
}

/// Names of the model's outputs, in output order.
pub(crate) fn output_names(graph: &InferenceModel) -> Vec<String> {
    graph
        .output_outlets()
        .map(|outlets| {
            outlets
                .iter()
                .map(|o| graph.outlet_label(*o).map(str::to_owned).unwrap_or_else(|| graph.node(o.node).name.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the plan on one f32 input tensor.
pub(crate) fn run(model: &str, plan: &Plan, input: Tensor) -> Result<TVec<TValue>, InferenceError> {
    plan.run(tvec![input.into()]).map_err(|e| InferenceError { model: model.to_owned(), message: format!("{e:#}") })
}

/// Borrows output `index` as a flat f32 slice.
pub(crate) fn output_slice<'a>(
    model: &str,
    outputs: &'a TVec<TValue>,
    index: usize,
) -> Result<&'a [f32], InferenceError> {
    outputs
        .get(index)
        .ok_or_else(|| InferenceError { model: model.to_owned(), message: format!("output {index} is missing") })?
        .try_as_plain_ram()
        .and_then(|view| view.as_slice::<f32>())
        .map_err(|e| InferenceError { model: model.to_owned(), message: format!("output {index} is not f32: {e}") })
}

fn tract_error(model: &str, error: TractError) -> ModelError {
    ModelError::Tract { model: model.to_owned(), message: format!("{error:#}") }
}
