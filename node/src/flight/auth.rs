//! Bearer-token authentication of every Flight call: the token of the control API
//! (`<data-dir>/api.token`), sent as `authorization: Bearer <token>`, compared in constant
//! time. Runs as a tonic interceptor, before any handler sees the request.

use std::sync::Arc;

use tonic::{Request, Status};

/// The interceptor: refuses a call without the right token with `Unauthenticated`.
#[derive(Clone, Debug)]
pub(crate) struct TokenCheck {
    /// The expected token.
    token: Arc<str>,
}

impl TokenCheck {
    /// Checks calls against `token`.
    pub(crate) fn new(token: Arc<str>) -> Self {
        Self { token }
    }

    /// Whether `request` carries the token.
    pub(crate) fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(token)
                if crate::api::constant_time_eq(token.as_bytes(), self.token.as_bytes()) =>
            {
                Ok(())
            }
            Some(_) => Err(Status::unauthenticated(
                "wrong API token: send `authorization: Bearer <token>` with the token in <data-dir>/api.token",
            )),
            None => Err(Status::unauthenticated(
                "missing API token: send `authorization: Bearer <token>` with the token in <data-dir>/api.token",
            )),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(&request)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(header: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(h) = header {
            r.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        r
    }

    #[test]
    fn only_the_token_passes() {
        let check = TokenCheck::new("secret".into());
        assert!(check.check(&with(Some("Bearer secret"))).is_ok());
        for bad in [
            None,
            Some("Bearer secreT"),
            Some("Bearer "),
            Some("secret"),
            Some("Basic secret"),
            Some("Bearer secret2"),
        ] {
            let err = check.check(&with(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(err.message().contains("api.token"));
        }
    }
}
