//! EC2 errors into the shared error classes. Only the class decides what
//! happens next (retry, re-plan, stop), so this mapping is the whole policy.

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
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
        | "UnrecognizedClientException" => ErrorClass::Auth,
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => ErrorClass::Transient,
        c if c.ends_with(".NotFound") => ErrorClass::NotFound,
        _ => ErrorClass::InvalidRequest,
    }
}

/// An SDK error as a [`CloudError`] about `object`.
pub fn cloud_error<E, R>(api: Api, object: &str, err: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let (class, code) = match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown").to_owned();
            (class_of_code(&code), code)
        }
        SdkError::TimeoutError(_) => (ErrorClass::Transient, "Timeout".to_owned()),
        SdkError::DispatchFailure(_) => (ErrorClass::Transient, "DispatchFailure".to_owned()),
        SdkError::ResponseError(_) => (ErrorClass::Transient, "ResponseError".to_owned()),
        SdkError::ConstructionFailure(_) => (ErrorClass::InvalidRequest, "ConstructionFailure".to_owned()),
        _ => (ErrorClass::Transient, "Unknown".to_owned()),
    };
    let message = match err.message() {
        Some(m) => m.to_owned(),
        None => DisplayErrorContext(&err).to_string(),
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
