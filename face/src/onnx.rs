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

/// Fixes the input to `shape` (f32), optimises and plans the model.
pub(crate) fn plan(model: &str, graph: InferenceModel, shape: &[usize]) -> Result<Plan, ModelError> {
    graph
        .with_input_fact(0, f32::fact(shape).into())
        .and_then(|g| g.into_optimized())
        .and_then(|g| g.into_runnable())
        .map_err(|e| tract_error(model, e))
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
