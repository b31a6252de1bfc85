//! The `tool` route: checks a request's `tools` and `tool_choice`, picks the tool when the
//! choice is left open (`tool_selection`), builds the prompt and the JSON schema that
//! constrains the model's output to a call of one of them, and turns that output into an
//! OpenAI tool call (see `verify.rs`).

use serde_json::{json, Value};

use adapters::{ChatMessage, GenerationRequest, Role};

use crate::config::ToolSelection;
use crate::error::{ApiError, Result};
use crate::openai::{
    ChatCompletionRequest, FunctionCall, FunctionSpec, ToolCall, ToolChoice, ToolChoiceMode,
};
use crate::pipeline::sources::search_query;
use crate::state::AppState;

/// At most this many tools per request (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// What the request allows.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolMode {
    /// No tools, or `tool_choice: "none"`: never a tool call.
    Off,
    /// The router decides.
    Auto,
    /// A call of any tool is required.
    Required,
    /// A call of this tool is required.
    Named(String),
}

/// A request's checked tools.
#[derive(Debug, Clone)]
pub struct ToolSet {
    pub tools: Vec<FunctionSpec>,
    pub mode: ToolMode,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks `tools` and `tool_choice`.
pub fn tool_set(request: &ChatCompletionRequest) -> Result<ToolSet> {
    let tools = request.tools.clone().unwrap_or_default();
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            format!("at most {MAX_TOOLS} tools"),
            "tools",
        ));
    }
    let mut functions = Vec::with_capacity(tools.len());
    for tool in tools {
        if tool.kind != "function" {
            return Err(ApiError::invalid(
                format!(
                    "tool type `{}` is not supported; only `function` is",
                    tool.kind
                ),
                "tools",
            ));
        }
        let name = &tool.function.name;
        if !valid_name(name) {
            return Err(ApiError::invalid(
                format!("tool name `{name}` must be 1-64 letters, digits, `_` or `-`"),
                "tools",
            ));
        }
        if functions.iter().any(|f: &FunctionSpec| f.name == *name) {
            return Err(ApiError::invalid(
                format!("tool `{name}` is listed twice"),
                "tools",
            ));
        }
        match &tool.function.parameters {
            None => {}
            Some(Value::Object(schema)) if schema.get("type").is_none_or(|t| t == "object") => {}
            Some(_) => {
                return Err(ApiError::invalid(
                    format!("parameters of `{name}` must be a JSON schema of an object"),
                    "tools",
                ))
            }
        }
        functions.push(tool.function);
    }
    let mode = match &request.tool_choice {
        _ if functions.is_empty() => match &request.tool_choice {
            None | Some(ToolChoice::Mode(ToolChoiceMode::None | ToolChoiceMode::Auto)) => {
                ToolMode::Off
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "tool_choice asks for a tool call but the request has no tools",
                    "tool_choice",
                ))
            }
        },
        Some(ToolChoice::Mode(ToolChoiceMode::None)) => ToolMode::Off,
        None | Some(ToolChoice::Mode(ToolChoiceMode::Auto)) => ToolMode::Auto,
        Some(ToolChoice::Mode(ToolChoiceMode::Required)) => ToolMode::Required,
        Some(ToolChoice::Named(named)) => {
            if named.kind != "function" || !functions.iter().any(|f| f.name == named.function.name)
            {
                return Err(ApiError::invalid(
                    format!(
                        "tool_choice names `{}`, which is not in tools",
                        named.function.name
                    ),
                    "tool_choice",
                ));
            }
            ToolMode::Named(named.function.name.clone())
        }
    };
    Ok(ToolSet {
        tools: functions,
        mode,
    })
}

impl ToolSet {
    /// A request without tools.
    pub fn none() -> Self {
        Self {
            tools: Vec::new(),
            mode: ToolMode::Off,
        }
    }

    /// Narrows the callable tools to `name` (a tool picked for the model).
    pub fn pick(&mut self, name: &str) {
        if self.tools.iter().any(|f| f.name == name) {
            self.mode = ToolMode::Named(name.to_string());
        }
    }

    /// Text describing a tool for embedding-based selection: its name in words and its
    /// description.
    pub fn tool_texts(&self) -> Vec<(String, String)> {
        self.tools
            .iter()
            .map(|f| {
                let words = f.name.replace(['_', '-'], " ");
                let text = match &f.description {
                    Some(d) => format!("{words}: {d}"),
                    None => words,
                };
                (f.name.clone(), text)
            })
            .collect()
    }

    /// The tools a call may use: all, or the named one.
    fn callable(&self) -> Vec<&FunctionSpec> {
        match &self.mode {
            ToolMode::Named(name) => self.tools.iter().filter(|f| f.name == *name).collect(),
            _ => self.tools.iter().collect(),
        }
    }

    /// The schema of the model's whole output: `{"name": <tool>, "arguments": {...}}` for one
    /// of the callable tools.
    pub fn output_schema(&self) -> Value {
        let options: Vec<Value> = self
            .callable()
            .into_iter()
            .map(|f| {
                let mut parameters = f
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                close_objects(&mut parameters);
                json!({
                    "type": "object",
                    "properties": {
                        "name": {"const": f.name},
                        "arguments": parameters,
                    },
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                })
            })
            .collect();
        if options.len() == 1 {
            options.into_iter().next().expect("one option")
        } else {
            json!({"anyOf": options})
        }
    }

    /// The system message that lists the tools; a client's own system message comes first.
    pub fn with_tool_prompt(&self, messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
        let mut prompt: Vec<String> = messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.clone())
            .collect();
        let mut tools = String::from(
            "You can call these tools. Answer with one JSON object {\"name\": <tool name>, \
             \"arguments\": {...}} that calls the tool serving the user's request, with \
             arguments taken from the request.\n",
        );
        for f in self.callable() {
            tools.push_str(&format!("\n- {}", f.name));
            if let Some(description) = &f.description {
                tools.push_str(&format!(": {description}"));
            }
            if let Some(parameters) = &f.parameters {
                tools.push_str(&format!("\n  parameters: {parameters}"));
            }
        }
        prompt.push(tools);
        let mut out = vec![ChatMessage::new(Role::System, prompt.join("\n\n"))];
        out.extend(messages.into_iter().filter(|m| m.role != Role::System));
        out
    }

    /// The tool call in the model's (schema-constrained) output; `None` when the output was
    /// cut short (e.g. by `max_tokens`) and does not parse.
    pub fn parse_call(&self, output: &str) -> Option<ToolCall> {
        let value: Value = serde_json::from_str(output.trim()).ok()?;
        let name = value.get("name")?.as_str()?;
        self.callable().iter().find(|f| f.name == name)?;
        let arguments = value.get("arguments")?;
        Some(ToolCall {
            id: format!("call_{}", uuid::Uuid::new_v4().simple()),
            kind: "function".into(),
            function: FunctionCall {
                name: name.to_string(),
                arguments: arguments.to_string(),
            },
        })
    }
}

/// Readies the generation of the `tool` route: picks the tool when `tool_choice` leaves it
/// open, lists the tools in the prompt and constrains the output to a call. Tool calls are
/// decoded greedily: a sampled token could still match the schema, but greedy gives the
/// model's best arguments.
pub async fn prepare(
    state: &AppState,
    mut tools: ToolSet,
    generation: &mut GenerationRequest,
) -> Result<ToolSet> {
    if tools.mode == ToolMode::Auto || tools.mode == ToolMode::Required {
        if let Some(name) = select_tool(state, &tools, generation).await? {
            tools.pick(&name);
        }
    }
    generation.messages = tools.with_tool_prompt(std::mem::take(&mut generation.messages));
    generation.json_schema = Some(tools.output_schema());
    generation.sampling.temperature = 0.0;
    generation.sampling.seed = None;
    generation.sampling.stop.clear();
    Ok(tools)
}

/// With `tool_selection = "embedding"` and several tools, the tool whose name and description
/// are nearest to the last user message (cosine of MiniLM embeddings). Small models pick the
/// wrong one of several tools (SmolLM2-135M called `get_time` for a weather question), while
/// they fill the arguments of a given tool well.
async fn select_tool(
    state: &AppState,
    tools: &ToolSet,
    generation: &GenerationRequest,
) -> Result<Option<String>> {
    if state.config().tool_selection != ToolSelection::Embedding || tools.tools.len() < 2 {
        return Ok(None);
    }
    let (Ok(embedder), Some(query)) = (state.embedder(), search_query(&generation.messages)) else {
        return Ok(None);
    };
    let candidates = tools.tool_texts();
    let query = query.to_string();
    let best = tokio::task::spawn_blocking(move || -> retrieval::Result<Option<String>> {
        let mut texts = vec![query];
        texts.extend(candidates.iter().map(|(_, text)| text.clone()));
        let vectors = embedder.embed(&texts)?;
        let score = |v: &[f32]| -> f32 { v.iter().zip(&vectors[0]).map(|(a, b)| a * b).sum() };
        Ok(candidates
            .iter()
            .zip(&vectors[1..])
            .max_by(|a, b| score(a.1).total_cmp(&score(b.1)))
            .map(|((name, _), _)| name.clone()))
    })
    .await
    .map_err(|e| ApiError::Embedder(e.to_string()))??;
    Ok(best)
}

/// Constrains every object in a parameters schema to its declared properties, unless the
/// schema itself says what else it allows (`additionalProperties`, `patternProperties`).
///
/// Clients send tools as LangChain's `bind_tools` and most hand-written tools do, without
/// `additionalProperties: false`; JSON Schema then allows any other key, and constrained
/// decoding lets a small model fill the object with invented keys until `max_tokens`. Strict
/// tool calling elsewhere closes the objects the same way.
fn close_objects(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    let is_object =
        map.get("type").is_some_and(|t| t == "object") || map.contains_key("properties");
    if is_object
        && !map.contains_key("additionalProperties")
        && !map.contains_key("patternProperties")
    {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" | "definitions" => {
                if let Value::Object(children) = value {
                    children.values_mut().for_each(close_objects);
                }
            }
            "items" | "additionalProperties" | "not" => close_objects(value),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                if let Value::Array(options) = value {
                    options.iter_mut().for_each(close_objects);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatCompletionRequest {
        serde_json::from_value(body).unwrap()
    }

    fn weather_and_time(choice: Value) -> ChatCompletionRequest {
        request(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}}}}
            ],
            "tool_choice": choice,
        }))
    }

    #[test]
    fn argument_objects_are_closed_unless_the_schema_opens_them() {
        let set = tool_set(&request(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "place": {"type": "object", "properties": {"lat": {"type": "number"}}},
                    "tags": {"type": "array", "items": {"type": "object", "properties": {}}},
                    "extra": {"type": "object", "additionalProperties": {"type": "string"}}
                }
            }}}],
        })))
        .unwrap();
        let arguments = &set.output_schema()["properties"]["arguments"];
        assert_eq!(arguments["additionalProperties"], false, "{arguments}");
        let properties = &arguments["properties"];
        assert_eq!(properties["place"]["additionalProperties"], false);
        assert_eq!(properties["tags"]["items"]["additionalProperties"], false);
        assert_eq!(
            properties["extra"]["additionalProperties"],
            json!({"type": "string"}),
            "a schema that allows more keeps allowing it"
        );
        assert!(properties["city"].get("additionalProperties").is_none());
    }

    #[test]
    fn modes_follow_tool_choice() {
        assert_eq!(
            tool_set(&weather_and_time(json!("auto"))).unwrap().mode,
            ToolMode::Auto
        );
        assert_eq!(
            tool_set(&weather_and_time(json!("none"))).unwrap().mode,
            ToolMode::Off
        );
        assert_eq!(
            tool_set(&weather_and_time(json!("required"))).unwrap().mode,
            ToolMode::Required
        );
        let named = json!({"type": "function", "function": {"name": "get_time"}});
        assert_eq!(
            tool_set(&weather_and_time(named)).unwrap().mode,
            ToolMode::Named("get_time".into())
        );
        let unknown = json!({"type": "function", "function": {"name": "nope"}});
        assert!(tool_set(&weather_and_time(unknown)).is_err());
        let no_tools = request(json!({"model": "m", "messages": [], "tool_choice": "required"}));
        assert!(tool_set(&no_tools).is_err());
    }

    #[test]
    fn bad_tools_are_refused() {
        for tools in [
            json!([{"type": "retrieval", "function": {"name": "x"}}]),
            json!([{"type": "function", "function": {"name": "has space"}}]),
            json!([{"type": "function", "function": {"name": "x", "parameters": {"type": "string"}}}]),
            json!([{"type": "function", "function": {"name": "x"}}, {"type": "function", "function": {"name": "x"}}]),
        ] {
            let r = request(json!({"model": "m", "messages": [], "tools": tools}));
            assert!(tool_set(&r).is_err(), "{tools}");
        }
    }

    #[test]
    fn schema_and_parsing_cover_the_callable_tools() {
        let set = tool_set(&weather_and_time(json!("auto"))).unwrap();
        let schema = set.output_schema();
        assert_eq!(schema["anyOf"].as_array().unwrap().len(), 2);
        let call = set
            .parse_call(r#"{"name": "get_weather", "arguments": {"city": "Oslo"}}"#)
            .unwrap();
        assert_eq!(call.function.name, "get_weather");
        assert_eq!(call.function.arguments, r#"{"city":"Oslo"}"#);
        assert!(set.parse_call(r#"{"name": "get_weather", "argu"#).is_none());
        assert!(set
            .parse_call(r#"{"name": "rm_rf", "arguments": {}}"#)
            .is_none());
        let named = json!({"type": "function", "function": {"name": "get_time"}});
        let set = tool_set(&weather_and_time(named)).unwrap();
        assert_eq!(
            set.output_schema()["properties"]["name"]["const"],
            "get_time"
        );
        let prompt = set.with_tool_prompt(vec![ChatMessage::new(Role::User, "time?")]);
        assert!(prompt[0].content.contains("- get_time: Current time"));
        assert!(!prompt[0].content.contains("get_weather"));
    }
}
