//! `vecmem snapshot`: asks a running server for a snapshot over gRPC and
//! writes the archive to a file. The archive is written beside the file
//! under a `.partial` name and renamed only once the whole stream arrived,
//! so an interrupted download never looks like a backup.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tonic::metadata::MetadataValue;

use crate::client;
use crate::proto;
use crate::proto::namespace_service_client::NamespaceServiceClient;

/// What a download wrote.
#[derive(Debug)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Downloads a snapshot from the server at `addr` (`HOST:PORT` or a
/// `http://` URL) into `out`, presenting `api_key` if given.
pub async fn download(addr: &str, api_key: Option<&str>, out: &Path) -> anyhow::Result<Downloaded> {
    let channel = client::connect(&client::endpoint(addr)?).await?;
    let mut request = tonic::Request::new(proto::SnapshotRequest {});
    if let Some(key) = api_key {
        let bearer: MetadataValue<_> = format!("Bearer {key}")
            .parse()
            .context("the API key is not a valid header value")?;
        request.metadata_mut().insert("authorization", bearer);
    }
    let mut chunks = NamespaceServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .snapshot(request)
        .await
        .context("the server refused the snapshot")?
        .into_inner();

    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut bytes = 0;
    let received = async {
        while let Some(chunk) = chunks
            .message()
            .await
            .context("the snapshot stream broke")?
        {
            file.write_all(&chunk.data).await?;
            bytes += chunk.data.len() as u64;
        }
        file.sync_all().await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(err) = received {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(err);
    }
    tokio::fs::rename(&partial, out)
        .await
        .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
    Ok(Downloaded {
        path: out.to_owned(),
        bytes,
    })
}
