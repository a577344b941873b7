//! A client of the Kubernetes Container Runtime Interface (`runtime.v1`), generated from the
//! vendored `proto/api.proto`, connected the way the kubelet connects: gRPC over the runtime's
//! unix socket. hardway's lab tests start pod sandboxes and containers in containerd with it.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// The generated messages and clients (`runtime.v1`).
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

pub use v1::image_service_client::ImageServiceClient;
pub use v1::runtime_service_client::RuntimeServiceClient;
/// The error of every call.
pub use tonic::Status;

/// Both CRI services on one connection.
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

/// Connects to the CRI socket at `socket` (containerd's: `/run/containerd/containerd.sock`).
pub async fn connect(socket: impl Into<PathBuf>) -> Result<Cri, tonic::transport::Error> {
    let socket = socket.into();
    // The URI is required by the API and ignored: every connection goes to the socket.
    let channel = Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }))
        .await?;
    Ok(Cri { runtime: RuntimeServiceClient::new(channel.clone()), images: ImageServiceClient::new(channel) })
}
