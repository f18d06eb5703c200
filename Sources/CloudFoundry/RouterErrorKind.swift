/// The kinds of error the router answers itself, by the value gorouter puts in `X-Cf-Routererror`
/// (without the detail that `endpoint_failure (<error>)` carries). sticky-proxy counts its errors by
/// these (`ProxyCounter.routerErrors`, `sticky_proxy_router_errors_total{error="..."}`) and the cluster reads them back from that
/// counter: one list for both.
public enum RouterErrorKind: String, CaseIterable, Sendable {
    /// 404: no route for the host and path; 400 for an `X-CF-APP-INSTANCE` naming no instance.
    case unknownRoute = "unknown_route"
    /// 400: a malformed `X-CF-APP-INSTANCE`.
    case invalidAppInstanceHeader = "invalid_cf_app_instance_header"
    /// 400: no Host header.
    case emptyHost = "empty_host"
    /// 503: the route is kept with no instance (`empty_pool_response_code_503` with `empty_pool_timeout`).
    case noEndpoints = "no_endpoints"
    /// 503: every endpoint at max_conns.
    case connectionLimitReached = "Connection Limit Reached"
    /// 502: attempts exhausted, or an error that could not be retried.
    case endpointFailure = "endpoint_failure"
    /// 499: the client went away before the response.
    case clientClosedRequest = "client_closed_request"

    /// The router's own 5xx (502 and 503); its other errors are 4xx.
    public var isServerError: Bool {
        switch self {
        case .noEndpoints, .connectionLimitReached, .endpointFailure: true
        case .unknownRoute, .invalidAppInstanceHeader, .emptyHost, .clientClosedRequest: false
        }
    }
}
