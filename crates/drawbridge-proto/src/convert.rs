//! The worker contract (`drawbridge_types::worker`) to and from its protobuf messages.

use drawbridge_types::ApiError;
use drawbridge_types::openai::{ChatMessage, FinishReason, FunctionCall, ToolCall};
use drawbridge_types::tools::ToolChoice;
use drawbridge_types::worker::{
    AccountSlots, AccountStatus, PromptBody, PromptInput, SlotsReport, TurnSummary, TurnTools,
    WorkerEvent,
};

use crate::worker::{self as pb, prompt_event::Event};
use crate::{error_info, from_error_info};

pub fn prompt_request(input: &PromptInput) -> pb::PromptRequest {
    // Serializing our own message types cannot fail; an empty list is refused by the worker.
    let json = |m: &Vec<ChatMessage>| serde_json::to_string(m).unwrap_or_default();
    let (messages_json, prompt, partial_answer) = match &input.body {
        PromptBody::Messages(m) => (json(m), String::new(), String::new()),
        PromptBody::Text(t) => (String::new(), t.clone(), String::new()),
        PromptBody::Resume { messages, partial } => {
            (json(messages), String::new(), partial.clone())
        }
    };
    let tools = &input.tools;
    pb::PromptRequest {
        request_id: input.request_id.clone(),
        model: input.model.clone(),
        account: input.account.clone().unwrap_or_default(),
        messages_json,
        prompt,
        max_output_tokens: input.max_output_tokens.unwrap_or(0),
        partial_answer,
        tools_json: if tools.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&tools.tools).unwrap_or_default()
        },
        tool_choice_json: if tools.choice == ToolChoice::Auto {
            String::new()
        } else {
            serde_json::to_string(&tools.choice).unwrap_or_default()
        },
        no_parallel_tool_calls: !tools.parallel,
        live_session: input.live_session.clone().unwrap_or_default(),
        conversation: input.conversation.clone().unwrap_or_default(),
    }
}

pub fn prompt_input(request: pb::PromptRequest) -> Result<PromptInput, ApiError> {
    let body = if !request.prompt.is_empty() {
        PromptBody::Text(request.prompt)
    } else {
        let messages: Vec<ChatMessage> = serde_json::from_str(&request.messages_json)
            .map_err(|e| ApiError::invalid_request(format!("messages_json: {e}")))?;
        if messages.is_empty() {
            return Err(ApiError::invalid_request(
                "either prompt or messages is required",
            ));
        }
        if request.partial_answer.is_empty() {
            PromptBody::Messages(messages)
        } else {
            PromptBody::Resume {
                messages,
                partial: request.partial_answer,
            }
        }
    };
    let tools = if request.tools_json.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&request.tools_json)
            .map_err(|e| ApiError::invalid_request(format!("tools_json: {e}")))?
    };
    let choice = if request.tool_choice_json.is_empty() {
        ToolChoice::Auto
    } else {
        serde_json::from_str(&request.tool_choice_json)
            .map_err(|e| ApiError::invalid_request(format!("tool_choice_json: {e}")))?
    };
    Ok(PromptInput {
        request_id: request.request_id,
        model: request.model,
        account: Some(request.account).filter(|a| !a.is_empty()),
        body,
        max_output_tokens: Some(request.max_output_tokens).filter(|n| *n > 0),
        tools: TurnTools {
            tools,
            choice,
            parallel: !request.no_parallel_tool_calls,
        },
        live_session: Some(request.live_session).filter(|s| !s.is_empty()),
        conversation: Some(request.conversation).filter(|s| !s.is_empty()),
        // Sampling parameters are for provider accounts, which never sit behind gRPC.
        params: Default::default(),
    })
}

pub fn prompt_event(event: WorkerEvent) -> pb::PromptEvent {
    let event = match event {
        WorkerEvent::Started { account } => Event::Started(pb::Started { account }),
        WorkerEvent::Text(text) => Event::Text(text),
        WorkerEvent::Reasoning(text) => Event::Reasoning(text),
        WorkerEvent::Activity => Event::Activity(pb::Activity {}),
        WorkerEvent::ToolCall(call) => Event::ToolCall(pb::ToolCall {
            id: call.id,
            name: call.function.name,
            arguments: call.function.arguments,
        }),
        WorkerEvent::Finished(s) => Event::Finished(pb::Finished {
            finish_reason: s.finish_reason.as_str().to_owned(),
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
            tokens_estimated: s.tokens_estimated,
            credits: s.credits,
            context_usage_percent: s.context_usage_percent.unwrap_or(-1.0),
            continuation_rounds: s.continuation_rounds,
            tool_choice_unmet: s.tool_choice_unmet,
            warm: s.warm,
        }),
        WorkerEvent::Error(e) => Event::Error(error_info(&e)),
    };
    pb::PromptEvent { event: Some(event) }
}

pub fn worker_event(event: pb::PromptEvent) -> WorkerEvent {
    match event.event {
        Some(Event::Started(s)) => WorkerEvent::Started { account: s.account },
        Some(Event::Text(t)) => WorkerEvent::Text(t),
        Some(Event::Reasoning(t)) => WorkerEvent::Reasoning(t),
        Some(Event::Activity(_)) => WorkerEvent::Activity,
        Some(Event::ToolCall(call)) => WorkerEvent::ToolCall(ToolCall {
            id: call.id,
            kind: "function".to_owned(),
            function: FunctionCall {
                name: call.name,
                arguments: call.arguments,
            },
        }),
        Some(Event::Finished(f)) => WorkerEvent::Finished(TurnSummary {
            finish_reason: FinishReason::parse(&f.finish_reason).unwrap_or(FinishReason::Stop),
            prompt_tokens: f.prompt_tokens,
            completion_tokens: f.completion_tokens,
            cached_prompt_tokens: None,
            tokens_estimated: f.tokens_estimated,
            credits: f.credits,
            context_usage_percent: (f.context_usage_percent >= 0.0)
                .then_some(f.context_usage_percent),
            continuation_rounds: f.continuation_rounds,
            tool_choice_unmet: f.tool_choice_unmet,
            warm: f.warm,
        }),
        Some(Event::Error(e)) => WorkerEvent::Error(from_error_info(e)),
        None => WorkerEvent::Error(ApiError::upstream("the worker sent an empty event")),
    }
}

pub fn slots_reply(report: &SlotsReport) -> pb::SlotsReply {
    pb::SlotsReply {
        worker_id: report.worker_id.clone(),
        draining: report.draining,
        accounts: report
            .accounts
            .iter()
            .map(|a| pb::AccountSlots {
                account: a.account.clone(),
                models: a.models.clone(),
                size: a.size,
                busy: a.busy,
                idle: a.idle,
                starting: a.starting,
                failed: a.failed,
                queue_depth: a.queue_depth,
                credits_used: a.credits_used,
                default_model: a.default_model.clone().unwrap_or_default(),
                tools_refused: a.tools_refused,
                last_error: a.last_error.clone().unwrap_or_default(),
                status: a.status.as_str().to_owned(),
            })
            .collect(),
    }
}

pub fn slots_report(reply: pb::SlotsReply) -> SlotsReport {
    SlotsReport {
        worker_id: reply.worker_id,
        draining: reply.draining,
        accounts: reply
            .accounts
            .into_iter()
            .map(|a| AccountSlots {
                account: a.account,
                models: a.models,
                size: a.size,
                busy: a.busy,
                idle: a.idle,
                starting: a.starting,
                failed: a.failed,
                queue_depth: a.queue_depth,
                credits_used: a.credits_used,
                default_model: Some(a.default_model).filter(|m| !m.is_empty()),
                tools_refused: a.tools_refused,
                last_error: Some(a.last_error).filter(|e| !e.is_empty()),
                status: AccountStatus::parse(&a.status),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drawbridge_types::openai::Role;

    #[test]
    fn prompt_requests_round_trip() {
        let input = PromptInput {
            request_id: "r1".into(),
            model: "kiro".into(),
            account: Some("a1".into()),
            body: PromptBody::Messages(vec![ChatMessage::new(Role::User, "hi")]),
            max_output_tokens: Some(16),
            tools: TurnTools::default(),
            live_session: None,
            conversation: None,
            params: Default::default(),
        };
        assert_eq!(prompt_input(prompt_request(&input)).unwrap(), input);
        let resume = PromptInput {
            body: PromptBody::Resume {
                messages: vec![ChatMessage::new(Role::User, "count")],
                partial: "one two".into(),
            },
            ..input.clone()
        };
        assert_eq!(prompt_input(prompt_request(&resume)).unwrap(), resume);
        let text = PromptInput {
            account: None,
            body: PromptBody::Text("x".into()),
            max_output_tokens: None,
            ..input
        };
        assert_eq!(prompt_input(prompt_request(&text)).unwrap(), text);
        let with_tools = PromptInput {
            tools: TurnTools {
                tools: vec![drawbridge_types::Tool::function(
                    "weather",
                    "The weather in a city",
                    serde_json::json!({"type": "object"}),
                )],
                choice: ToolChoice::Function("weather".into()),
                parallel: false,
            },
            live_session: Some(drawbridge_types::tools::new_live_id()),
            conversation: Some("ab".repeat(32)),
            ..text
        };
        assert_eq!(
            prompt_input(prompt_request(&with_tools)).unwrap(),
            with_tools
        );
    }

    #[test]
    fn events_round_trip() {
        let events = [
            WorkerEvent::Started {
                account: "a".into(),
            },
            WorkerEvent::Text("hello".into()),
            WorkerEvent::ToolCall(ToolCall {
                id: "call_1".into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: "weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into(),
                },
            }),
            WorkerEvent::Finished(TurnSummary {
                finish_reason: FinishReason::Length,
                prompt_tokens: 3,
                completion_tokens: 4,
                cached_prompt_tokens: None,
                tokens_estimated: true,
                credits: 0.25,
                context_usage_percent: Some(12.5),
                continuation_rounds: 2,
                tool_choice_unmet: true,
                warm: true,
            }),
            WorkerEvent::Error(ApiError::upstream("died")),
        ];
        for event in events {
            assert_eq!(worker_event(prompt_event(event.clone())), event);
        }
    }

    #[test]
    fn bad_messages_json_is_a_client_error() {
        let request = pb::PromptRequest {
            messages_json: "nope".into(),
            ..Default::default()
        };
        assert!(prompt_input(request).is_err());
    }

    #[test]
    fn slots_round_trip() {
        let account = |default_model: Option<&str>, last_error: Option<&str>| AccountSlots {
            account: "a".into(),
            models: vec!["kiro".into(), "claude-sonnet-5".into()],
            default_model: default_model.map(str::to_owned),
            size: 3,
            busy: 1,
            idle: 1,
            starting: 1,
            failed: 2,
            queue_depth: 4,
            credits_used: 0.25,
            tools_refused: 7,
            last_error: last_error.map(str::to_owned),
            status: AccountStatus::Degraded,
        };
        let report = SlotsReport {
            worker_id: "w".into(),
            draining: true,
            accounts: vec![
                account(Some("claude-sonnet-5"), Some("boom")),
                account(None, None),
            ],
        };
        assert_eq!(slots_report(slots_reply(&report)), report);
    }
}
