//! PLACEHOLDER until the bridge branch lands (same API).
use std::sync::Arc;

use drawbridge_telemetry::Shutdown;
use drawbridge_types::Tool;

pub struct Bridge;
impl Bridge {
    pub async fn start(_shutdown: &Shutdown) -> std::io::Result<Arc<Bridge>> {
        Err(std::io::Error::other("placeholder"))
    }
    pub fn open(self: &Arc<Self>, _tools: Vec<Tool>) -> BridgeSession {
        BridgeSession
    }
}
pub struct BridgeSession;
impl BridgeSession {
    pub fn server(&self) -> drawbridge_acp::HttpMcpServer {
        drawbridge_acp::HttpMcpServer {
            name: String::new(),
            url: String::new(),
            headers: Vec::new(),
        }
    }
    pub async fn next_call(&mut self) -> Option<HeldCall> {
        None
    }
}
pub struct HeldCall {
    pub name: String,
    pub arguments: String,
}
impl HeldCall {
    pub fn answer(self, _text: String, _is_error: bool) {}
}
