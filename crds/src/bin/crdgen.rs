//! Prints the `DmemQuota` CustomResourceDefinition as YAML on stdout.
//!
//! The one place in the crate that does I/O. Regenerate the committed file with
//! `cargo run -q -p kube-dmem-crds --bin crdgen > crds/dmemquotas.kube-dmem.io.yaml`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match kube_dmem_crds::crd_yaml() {
        Ok(yaml) => match std::io::stdout().lock().write_all(yaml.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("crdgen: writing the CRD to stdout: {err}");
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            eprintln!("crdgen: serializing the CRD: {err}");
            ExitCode::FAILURE
        }
    }
}
