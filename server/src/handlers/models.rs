//! `GET /v1/models`: the model ids a client may put in `model`.

use axum::extract::State;
use axum::Json;

use crate::openai::{ModelCard, ModelList};
use crate::state::AppState;

pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: vec![ModelCard {
            id: state.config().model_id.clone(),
            object: "model".into(),
            created: 0,
            owned_by: "switchyard".into(),
        }],
    })
}
