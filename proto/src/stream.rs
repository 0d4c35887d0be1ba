//! Server-streaming helpers shared by hostd and the aggregator.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

/// The boxed stream type every streaming RPC returns.
pub type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Queues one message, or sheds a client whose buffer is full: it gets
/// `RESOURCE_EXHAUSTED` and should call again for a fresh snapshot.
pub async fn offer<T>(tx: &mpsc::Sender<Result<T, Status>>, item: T) -> bool {
    match tx.try_send(Ok(item)) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(_)) => {
            let shed = Status::resource_exhausted("client too slow; call again to resync");
            let _ = tx.send_timeout(Err(shed), Duration::from_secs(1)).await;
            false
        }
    }
}
