//! `GET /v1/models`: the model ids a client may put in `model` (the chat model, and the
//! embedding model when retrieval is enabled).

use axum::extract::State;
use axum::Json;

use crate::openai::{ModelCard, ModelList};
use crate::state::AppState;

pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    let card = |id: &str| ModelCard {
        id: id.to_string(),
        object: "model".into(),
        created: 0,
        owned_by: "switchyard".into(),
    };
    let mut data = vec![card(&state.config().model_id)];
    if state.config().retrieval_enabled {
        data.push(card(retrieval::EMBEDDING_MODEL_ID));
    }
    // Adapters are selected by putting their name in `model`.
    if let Ok(registry) = state.adapters() {
        data.extend(registry.list().iter().map(|a| card(&a.name)));
    }
    Json(ModelList {
        object: "list".into(),
        data,
    })
}
