//! Alibaba Cloud error codes: which [`ErrorClass`] each one means for the
//! operator, and which HTTP status the cloud sends it with (the emulator
//! answers with the same). The error body, and how the official SDK reads it
//! per status, are in `tests/fixtures/alibaba/errors.json`.

use crate::error::ErrorClass;

/// How the operator reacts to a cloud error code.
pub fn classify(code: &str, http_status: u16) -> ErrorClass {
    match code {
        c if c.starts_with("Throttling") => ErrorClass::Throttled,
        "ServiceUnavailable" | "InternalError" | "UnknownError" | "SignatureNonceUsed" => {
            ErrorClass::Transient
        }
        "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "InvalidAccessKeySecret"
        | "MissingSecurityToken"
        | "InvalidSignatureMethod"
        | "InvalidTimeStamp.Expired" => ErrorClass::Auth,
        c if c.starts_with("InvalidAccessKeyId")
            || c.starts_with("InvalidSecurityToken")
            || c.starts_with("Forbidden") =>
        {
            ErrorClass::Auth
        }
        "QuotaExceeded.PrivateIpAddress" | "InvalidVSwitchId.IpNotEnough" => ErrorClass::SubnetFull,
        "EniPerInstanceLimitExceeded" | "SecurityGroupInstanceLimitExceed" => ErrorClass::Quota,
        c if c.starts_with("QuotaExceeded") => ErrorClass::Quota,
        c if c.starts_with("InvalidOperation.") && c.ends_with("CountExceeded") => ErrorClass::Quota,
        c if c.ends_with(".NotFound") => ErrorClass::NotFound,
        "IncorrectInstanceStatus"
        | "InvalidOperation.InvalidEniState"
        | "InvalidOperation.InvalidEcsState"
        | "InvalidOperation.DeviceIndexInUse"
        | "Operation.Conflict" => ErrorClass::InvalidState,
        c if c.starts_with("IncorrectStatus") || c.starts_with("IncorrectInstanceStatus") => {
            ErrorClass::InvalidState
        }
        _ if http_status >= 500 => ErrorClass::Transient,
        _ => ErrorClass::InvalidRequest,
    }
}

/// The HTTP status the cloud answers a code with.
pub fn http_status(code: &str) -> u16 {
    match code {
        "ServiceUnavailable" => 503,
        "InternalError" | "UnknownError" => 500,
        "InvalidVSwitchId.IpNotEnough"
        | "EniPerInstanceLimitExceeded"
        | "SecurityGroupInstanceLimitExceed"
        | "IncorrectInstanceStatus"
        | "Operation.Conflict"
        | "InvalidIp.IpAssigned"
        | "InvalidVSwitchId.IpInvalid"
        | "InvalidOperation.EniServiceManaged"
        | "Forbidden.RAM" => 403,
        c if c.starts_with("InvalidOperation.") && c.ends_with("CountExceeded") => 403,
        c if c.ends_with(".NotFound") => 404,
        _ => 400,
    }
}

/// What the operator's admin should do about an error class, appended to
/// messages so every error says it.
pub fn advice(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Throttled => "the API quota is exhausted; calls are retried with backoff",
        ErrorClass::Quota => "an instance or ENI limit is reached; the planner uses another ENI or stops",
        ErrorClass::SubnetFull => "the vSwitch has no free address; add a vSwitch or free addresses",
        ErrorClass::NotFound => "the object is gone; the operator resyncs",
        ErrorClass::InvalidState => "the object is busy (attaching, detaching); retried after a resync",
        ErrorClass::Auth => "check the AccessKey or RAM role, its RAM policy, and the node's clock",
        ErrorClass::Transient => "the cloud failed; retried if the call is idempotent",
        ErrorClass::InvalidRequest => {
            "the request is wrong: check the configuration (vSwitch, security group)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_relevant_codes_fall_in_the_right_class() {
        let table = [
            ("Throttling", 400, ErrorClass::Throttled),
            ("Throttling.User", 400, ErrorClass::Throttled),
            ("Throttling.Api", 429, ErrorClass::Throttled),
            ("QuotaExceeded.PrivateIpAddress", 400, ErrorClass::SubnetFull),
            ("InvalidVSwitchId.IpNotEnough", 403, ErrorClass::SubnetFull),
            ("InvalidOperation.Ipv4CountExceeded", 403, ErrorClass::Quota),
            ("InvalidOperation.MaxEniCountExceeded", 403, ErrorClass::Quota),
            ("EniPerInstanceLimitExceeded", 403, ErrorClass::Quota),
            ("InvalidEniId.NotFound", 404, ErrorClass::NotFound),
            ("InvalidInstanceId.NotFound", 404, ErrorClass::NotFound),
            ("IncorrectInstanceStatus", 403, ErrorClass::InvalidState),
            ("InvalidOperation.InvalidEniState", 400, ErrorClass::InvalidState),
            ("SignatureDoesNotMatch", 400, ErrorClass::Auth),
            ("InvalidAccessKeyId.NotFound", 404, ErrorClass::Auth),
            ("InvalidTimeStamp.Expired", 400, ErrorClass::Auth),
            ("Forbidden.RAM", 403, ErrorClass::Auth),
            ("ServiceUnavailable", 503, ErrorClass::Transient),
            ("SomethingNew", 502, ErrorClass::Transient),
            ("MissingParameter", 400, ErrorClass::InvalidRequest),
            ("InvalidParameter", 400, ErrorClass::InvalidRequest),
        ];
        for (code, status, class) in table {
            assert_eq!(classify(code, status), class, "{code}");
        }
    }

    #[test]
    fn statuses_follow_the_cloud() {
        assert_eq!(http_status("InvalidEniId.NotFound"), 404);
        assert_eq!(http_status("InvalidVSwitchId.IpNotEnough"), 403);
        assert_eq!(http_status("Throttling.User"), 400);
        assert_eq!(http_status("ServiceUnavailable"), 503);
        assert_eq!(http_status("InvalidOperation.Ipv4CountExceeded"), 403);
    }
}
