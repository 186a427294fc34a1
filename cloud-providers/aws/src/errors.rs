//! EC2 errors into the shared error classes. Only the class decides what
//! happens next (retry, re-plan, stop), so this mapping is the whole policy.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use eni_ipam_cloud::{Api, CloudError, ErrorClass};

/// The class of an EC2 error code.
pub fn class_of_code(code: &str) -> ErrorClass {
    match code {
        "RequestLimitExceeded"
        | "Throttling"
        | "ThrottlingException"
        | "RequestThrottled"
        | "Client.RequestLimitExceeded" => ErrorClass::Throttled,
        "InsufficientFreeAddressesInSubnet" => ErrorClass::SubnetFull,
        "AttachmentLimitExceeded" | "PrivateIpAddressLimitExceeded" | "NetworkInterfaceLimitExceeded" => {
            ErrorClass::Quota
        }
        "IncorrectState" | "IncorrectInstanceState" | "InvalidNetworkInterface.InUse" => {
            ErrorClass::InvalidState
        }
        "UnauthorizedOperation"
        | "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "OptInRequired"
        | "Blocked"
        | "ExpiredToken"
        | "UnrecognizedClientException" => ErrorClass::Auth,
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => ErrorClass::Transient,
        c if c.ends_with(".NotFound") => ErrorClass::NotFound,
        _ => ErrorClass::InvalidRequest,
    }
}

/// The error's causes, by their Display only (the SDK's Debug forms are
/// pages long), on one line and bounded.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    let line = parts.join(": ").split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(400) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

/// An SDK error as a [`CloudError`] about `object`.
pub fn cloud_error<E, R>(api: Api, object: &str, err: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let chain = causes(&err);
    let (class, code) = match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown").to_owned();
            (class_of_code(&code), code)
        }
        SdkError::TimeoutError(_) => (ErrorClass::Transient, "Timeout".to_owned()),
        // No credentials anywhere in the chain fails before any byte is sent.
        SdkError::DispatchFailure(_) if chain.contains("credential") => {
            (ErrorClass::Auth, "NoCredentials".to_owned())
        }
        SdkError::DispatchFailure(_) => (ErrorClass::Transient, "DispatchFailure".to_owned()),
        SdkError::ResponseError(_) => (ErrorClass::Transient, "ResponseError".to_owned()),
        SdkError::ConstructionFailure(_) => (ErrorClass::InvalidRequest, "ConstructionFailure".to_owned()),
        _ => (ErrorClass::Transient, "Unknown".to_owned()),
    };
    let message = match err.message() {
        Some(m) => m.to_owned(),
        None => chain,
    };
    CloudError::new(api, class, code, object, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_codes_fall_in_the_classes_that_decide_retry_and_replan() {
        let table = [
            ("RequestLimitExceeded", ErrorClass::Throttled),
            ("InsufficientFreeAddressesInSubnet", ErrorClass::SubnetFull),
            ("AttachmentLimitExceeded", ErrorClass::Quota),
            ("PrivateIpAddressLimitExceeded", ErrorClass::Quota),
            ("InvalidNetworkInterfaceID.NotFound", ErrorClass::NotFound),
            ("InvalidAttachmentID.NotFound", ErrorClass::NotFound),
            ("IncorrectState", ErrorClass::InvalidState),
            ("UnauthorizedOperation", ErrorClass::Auth),
            ("AuthFailure", ErrorClass::Auth),
            ("InternalError", ErrorClass::Transient),
            ("InvalidParameterValue", ErrorClass::InvalidRequest),
        ];
        for (code, class) in table {
            assert_eq!(class_of_code(code), class, "{code}");
        }
    }
}
