//! CORE: how an error is shown to people in conditions, events and gRPC statuses.

use std::error::Error;

/// `err` and all its sources joined with `": "`: a condition message, an event note or a kubelet
/// event must say what is wrong in full, and each layer's `Display` names only its own part.
pub fn error_chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("writing dmem.max")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_layer_appears_once_in_order() {
        let err = Outer(std::io::Error::other("invalid argument"));
        assert_eq!(error_chain(&err), "writing dmem.max: invalid argument");
        assert_eq!(error_chain(&std::io::Error::other("alone")), "alone");
    }
}
