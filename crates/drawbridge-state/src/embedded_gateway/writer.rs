//! The data file's writer task and the store's handle to it.

use std::sync::Arc;

use drawbridge_runtime::Shutdown;
use tokio::sync::{mpsc, oneshot};

use super::{FLUSH_INTERVAL, Shared};
use crate::data_file::{Batch, DataFile};
use crate::error::StateError;
use crate::gateway::ApiKeyRecord;

/// The connection to the data file's writer task.
pub(super) struct FileHandle {
    pub(super) commands: mpsc::UnboundedSender<Command>,
    pub(super) path: String,
}

pub(super) enum Command {
    /// Write these records now; answer when durable.
    Keys(Vec<ApiKeyRecord>, oneshot::Sender<Result<(), StateError>>),
    /// Write what is waiting now.
    Flush(oneshot::Sender<Result<(), StateError>>),
    /// Write what is waiting, close the file, stop.
    Close(oneshot::Sender<Result<(), StateError>>),
}

impl FileHandle {
    pub(super) fn closed(&self) -> StateError {
        StateError::Unavailable(format!("data file {} is closed", self.path))
    }

    pub(super) async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), StateError>>) -> Command,
    ) -> Result<(), StateError> {
        let (answer, answered) = oneshot::channel();
        self.commands
            .send(command(answer))
            .map_err(|_| self.closed())?;
        answered.await.map_err(|_| self.closed())?
    }
}

/// The task that owns the data file: writes key changes when asked, usage behind.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    /// `None` once closed.
    pub(super) file: Option<Arc<DataFile>>,
    pub(super) path: String,
}

impl Writer {
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        shutdown: Shutdown,
    ) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutting_down = false;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Keys(records, answer)) => {
                        let batch = Batch { keys: records, ..Batch::default() };
                        let _ = answer.send(self.write(batch).await);
                    }
                    Some(Command::Flush(answer)) => {
                        let _ = answer.send(self.flush().await);
                    }
                    Some(Command::Close(answer)) => {
                        let _ = answer.send(self.close().await);
                        return;
                    }
                    // The store was dropped without close.
                    None => {
                        if let Err(error) = self.close().await {
                            tracing::warn!(file = %self.path, %error, "closing the gateway data file failed");
                        }
                        return;
                    }
                },
                _ = tick.tick() => self.flush_or_warn().await,
                () = shutdown.cancelled(), if !shutting_down => {
                    // Write what is waiting now, and keep going: the requests still in flight
                    // record their usage until the store is closed or dropped.
                    shutting_down = true;
                    self.flush_or_warn().await;
                }
            }
        }
    }

    async fn flush_or_warn(&mut self) {
        if let Err(error) = self.flush().await {
            tracing::warn!(file = %self.path, %error, "writing usage to the gateway data file failed; retrying");
        }
    }

    /// Write what changed since the last write behind; on failure it stays to be written.
    async fn flush(&mut self) -> Result<(), StateError> {
        let batch = self.shared.data().take_dirty(&self.shared.credits);
        self.write_behind(batch).await
    }

    /// Write `batch`, taken from the dirty set; on failure it goes back to it.
    async fn write_behind(&mut self, batch: Batch) -> Result<(), StateError> {
        if batch.is_empty() {
            return Ok(());
        }
        let result = self.write(batch.clone()).await;
        if result.is_err() {
            self.shared.data().restore_dirty(&batch);
        }
        result
    }

    async fn write(&mut self, batch: Batch) -> Result<(), StateError> {
        let Some(file) = self.file.clone() else {
            return Err(StateError::Unavailable(format!(
                "data file {} is closed",
                self.path
            )));
        };
        tokio::task::spawn_blocking(move || file.write(&batch))
            .await
            .map_err(|error| StateError::Backend(format!("writing the data file: {error}")))?
    }

    async fn close(&mut self) -> Result<(), StateError> {
        // The last write behind: changes are refused from the moment it is taken.
        let batch = {
            let mut data = self.shared.data();
            data.closed = true;
            data.take_dirty(&self.shared.credits)
        };
        let flushed = self.write_behind(batch).await;
        let Some(file) = self.file.take() else {
            return flushed;
        };
        // Every write has finished (they are awaited), so this is the only reference.
        let closed = match Arc::try_unwrap(file) {
            Ok(file) => tokio::task::spawn_blocking(move || file.close())
                .await
                .map_err(|error| StateError::Backend(format!("closing the data file: {error}")))?,
            Err(_) => Err(StateError::Backend(format!(
                "data file {} is still in use",
                self.path
            ))),
        };
        if closed.is_ok() {
            tracing::info!(file = %self.path, "gateway data file closed");
        }
        flushed.and(closed)
    }
}
