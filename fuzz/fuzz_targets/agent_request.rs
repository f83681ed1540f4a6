//! Fuzzes the agent's reading of a request from the socket: the raw bytes are tried as
//! the body of every verb (serde_json decode of the protocol type, as
//! `agent::server::decode` does, then the type's `validate`, as the allocator does
//! first), and as the query string of `GET /v1/status`. No I/O.
//!
//! Invariants checked:
//! - nothing panics;
//! - a refusal is an [`ErrorBody`] with a known CNI code (4 or 7) and a message, which
//!   the plugin turns into a CNI error with the same code;
//! - a request that passes `validate` is also accepted by the ledger's key type
//!   (`ipam::Attachment::new`, which the allocator calls right after; feature
//!   `ledger`), and survives a serialize/deserialize round trip unchanged and valid;
//! - a STATUS query's pool names are never empty strings.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

// The crates under test.
use ipledger_cni as cni;
use ipledger_cni::protocol;
use ipledger_core::Attachment as LedgerAttachment;

use cni::error::{CniError, ErrorCode};
use protocol::{
    AddRequest, Attachment, CheckRequest, DelRequest, ErrorBody, GcRequest, StatusQuery,
};

fuzz_target!(|data: &[u8]| {
    verb::<AddRequest>(data, "add", AddRequest::validate, |r| {
        vec![ledger_key(&r.attachment)]
    });
    verb::<DelRequest>(data, "del", DelRequest::validate, |r| {
        vec![ledger_key(&r.attachment)]
    });
    verb::<CheckRequest>(data, "check", CheckRequest::validate, |r| {
        vec![ledger_key(&r.attachment)]
    });
    verb::<GcRequest>(data, "gc", GcRequest::validate, |r| {
        // GC compares (containerID, ifName) with ledger records of `network`: every
        // pair must be one the ledger could hold.
        r.valid_attachments
            .iter()
            .map(|live| {
                (
                    r.network.clone(),
                    live.container_id.clone(),
                    live.if_name.clone(),
                )
            })
            .collect()
    });
    // STATUS has no body: the agent reads `?network=..&pools=..`; JSON form too, since
    // the type is serde.
    if let Ok(query) = std::str::from_utf8(data) {
        status(StatusQuery::from_query(query));
    }
    if let Ok(query) = serde_json::from_slice::<StatusQuery>(data) {
        status(query);
    }
});

/// `FUZZ_DEBUG=1 target INPUT...` prints what each input decoded as (for seed writing).
fn debug(what: std::fmt::Arguments) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some()) {
        eprintln!("agent_request: {what}");
    }
}

fn ledger_key(a: &Attachment) -> (String, String, String) {
    (a.network.clone(), a.container_id.clone(), a.if_name.clone())
}

fn verb<T>(
    data: &[u8],
    name: &str,
    validate: fn(&T) -> Result<(), ErrorBody>,
    keys: fn(&T) -> Vec<(String, String, String)>,
) where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    // server::decode: a body that does not decode is refused with code 6.
    let Ok(request) = serde_json::from_slice::<T>(data) else {
        return;
    };
    debug(format_args!(
        "{name}: decodes; validate: {:?}",
        validate(&request)
    ));
    match validate(&request) {
        Err(refusal) => {
            assert!(
                refusal.code == ErrorCode::InvalidEnvironment.as_u32()
                    || refusal.code == ErrorCode::InvalidNetworkConfig.as_u32(),
                "{name}: refusal with code {}: {refusal:?}",
                refusal.code
            );
            assert!(!refusal.msg.is_empty(), "{name}: refusal without a message");
            let error = CniError::from(refusal.clone());
            assert_eq!(error.code, refusal.code);
            assert!(error.known_code().is_some());
            // What the agent writes back must decode as what the plugin reads.
            let wire = serde_json::to_vec(&refusal).expect("ErrorBody serializes");
            let back: ErrorBody = serde_json::from_slice(&wire).expect("ErrorBody decodes");
            assert_eq!(back, refusal);
        }
        Ok(()) => {
            for (network, container_id, if_name) in keys(&request) {
                if let Err(e) =
                    LedgerAttachment::new(network.clone(), container_id.clone(), if_name.clone())
                {
                    panic!(
                        "{name}: validate() accepted ({network:?}, {container_id:?}, {if_name:?}) but the ledger refuses it: {e}"
                    );
                }
            }
            let wire = serde_json::to_vec(&request).expect("a request serializes");
            let back: T = serde_json::from_slice(&wire).unwrap_or_else(|e| {
                panic!(
                    "{name}: own serialization does not decode: {e}: {}",
                    String::from_utf8_lossy(&wire)
                )
            });
            assert_eq!(back, request, "{name}: round trip changed the request");
            assert!(
                validate(&back).is_ok(),
                "{name}: round trip made it invalid"
            );
        }
    }
}

fn status(query: StatusQuery) {
    debug(format_args!("status: {query:?}"));
    for pool in query.pool_names() {
        assert!(!pool.is_empty());
    }
    let _ = query.to_path();
}
