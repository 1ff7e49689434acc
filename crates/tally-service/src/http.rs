//! Small pieces the HTTP services (the gateway, the operator console)
//! share.

use actix_web::http::Method;

/// The method as metrics and spans name it: one of the standard methods, or
/// `other` for anything else. Any token is a valid HTTP method and the label
/// is recorded before authentication, so passing methods through would let
/// any caller mint a new time series per request.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        let odd = Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(method_label(&odd), "other");
    }
}
