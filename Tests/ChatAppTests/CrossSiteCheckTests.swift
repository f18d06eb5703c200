import Testing

@testable import ChatApp

@Suite struct CrossSiteCheckTests {
    /// A POST to the server at `host` (its Host header) with these headers.
    func post(
        fetchSite: String? = nil, origin: String? = nil, host: String? = "chat.example.com:8080", forwardedHost: String? = nil
    ) -> CrossSiteCheck.Verdict {
        CrossSiteCheck.decide(method: "POST", fetchSite: fetchSite, origin: origin, host: host, forwardedHost: forwardedHost)
    }

    @Test func withoutBrowserHeadersARequestIsAllowed() {
        // curl, scripts, the tests' clients, browsers from before Origin and Sec-Fetch-Site.
        #expect(post() == .allow)
        #expect(post(host: nil) == .allow)
    }

    @Test func safeMethodsAreNeverRefused() {
        for method in ["GET", "HEAD", "OPTIONS", "get"] {
            let verdict = CrossSiteCheck.decide(
                method: method, fetchSite: "cross-site", origin: "http://evil.example", host: "chat.example.com", forwardedHost: nil)
            #expect(verdict == .allow, "\(method)")
        }
        for method in ["PUT", "DELETE", "PATCH"] {
            let verdict = CrossSiteCheck.decide(
                method: method, fetchSite: "cross-site", origin: nil, host: "chat.example.com", forwardedHost: nil)
            #expect(verdict == .refuse(.crossSite(origin: nil)), "\(method)")
        }
    }

    @Test func sameOriginAndUserInitiatedFetchesAreAllowed() {
        #expect(post(fetchSite: "same-origin", origin: "http://chat.example.com:8080") == .allow)
        #expect(post(fetchSite: "same-origin") == .allow)
        #expect(post(fetchSite: " Same-Origin ") == .allow)
        // The browser compared the page with the URL it requested: trusted over a Host a proxy rewrote.
        #expect(post(fetchSite: "same-origin", origin: "https://public.example", host: "10.0.0.5:61001") == .allow)
        #expect(post(fetchSite: "none") == .allow)
    }

    @Test func crossSiteIsRefusedWhateverTheOrigin() {
        #expect(post(fetchSite: "cross-site", origin: "http://evil.example") == .refuse(.crossSite(origin: "http://evil.example")))
        #expect(post(fetchSite: "cross-site") == .refuse(.crossSite(origin: nil)))
        // Even an Origin naming this server: the browser says the page was on another site.
        #expect(post(fetchSite: "cross-site", origin: "http://chat.example.com:8080") != .allow)
    }

    @Test func sameSiteIsAllowedOnlyWithThisServersOrigin() {
        #expect(post(fetchSite: "same-site", origin: "http://chat.example.com:8080") == .allow)
        // Another port, or another app under the same shared domain (Cloud Foundry's apps.example.com).
        #expect(
            post(fetchSite: "same-site", origin: "http://chat.example.com:9090")
                == .refuse(.otherOrigin("http://chat.example.com:9090", fetchSite: "same-site")))
        #expect(post(fetchSite: "same-site", origin: "https://other.example.com", host: "chat.example.com") != .allow)
        #expect(post(fetchSite: "same-site") == .refuse(.noOrigin(fetchSite: "same-site")))
        // An unknown value is treated as same-site.
        #expect(post(fetchSite: "same-galaxy", origin: "http://chat.example.com:8080") == .allow)
        #expect(post(fetchSite: "same-galaxy") == .refuse(.noOrigin(fetchSite: "same-galaxy")))
    }

    @Test func anOriginMatchingHostIsAllowed() {
        #expect(post(origin: "http://chat.example.com:8080") == .allow)
        #expect(post(origin: "HTTP://Chat.Example.COM:8080") == .allow)
        #expect(post(origin: "http://127.0.0.1:8080", host: "127.0.0.1:8080") == .allow)
        #expect(post(origin: "http://[::1]:8080", host: "[::1]:8080") == .allow)
        // Default ports: absent on one side, explicit on the other.
        #expect(post(origin: "https://chat.example.com", host: "chat.example.com") == .allow)
        #expect(post(origin: "https://chat.example.com", host: "chat.example.com:443") == .allow)
        #expect(post(origin: "http://chat.example.com:80", host: "chat.example.com") == .allow)
    }

    @Test func anOriginWithAnotherHostOrPortIsRefused() {
        #expect(post(origin: "http://evil.example") == .refuse(.otherOrigin("http://evil.example", fetchSite: nil)))
        #expect(post(origin: "http://chat.example.com:8081") != .allow)
        #expect(post(origin: "http://chat.example.com") != .allow)  // port 80, not 8080
        #expect(post(origin: "https://chat.example.com", host: "chat.example.com:80") != .allow)
        #expect(post(origin: "http://chat.example.com.evil.example:8080") != .allow)
        #expect(post(origin: "http://evil.example:8080", host: "chat.example.com:8080") != .allow)
        // No Host to compare with (HTTP/1.0): not provably this server.
        #expect(post(origin: "http://chat.example.com:8080", host: nil) != .allow)
    }

    @Test func nullAndMalformedOriginsAreRefused() {
        #expect(post(origin: "null") == .refuse(.otherOrigin("null", fetchSite: nil)))
        for bad in [
            "", "chat.example.com:8080", "file://chat.example.com:8080", "ftp://chat.example.com:8080", "http://",
            "http://chat.example.com:8080/", "http://user@chat.example.com:8080", "http://chat.example.com:8080 http://evil.example",
            "http://chat.example.com:8080, http://evil.example", "http://chat.example.com:99999", "http://chat.example.com:80a",
            "http://chat.example.com:", "http://[::1", "http://::1:8080",
        ] {
            #expect(post(origin: bad) != .allow, "\(bad)")
        }
    }

    @Test func xForwardedHostIsTheClientsHostBehindAProxyThatRewritesHost() {
        // A proxy that sends its upstream's address as Host and the client's as X-Forwarded-Host.
        #expect(post(origin: "https://chat.example.com", host: "10.0.0.5:61001", forwardedHost: "chat.example.com") == .allow)
        // The first value is the client's; later ones were added by inner proxies.
        #expect(post(origin: "https://chat.example.com", host: "10.0.0.5", forwardedHost: "chat.example.com, inner.local") == .allow)
        #expect(post(origin: "https://inner.local", host: "10.0.0.5", forwardedHost: "chat.example.com, inner.local") != .allow)
        // Host still counts (Cloud Foundry's router and sticky-proxy keep it and set no X-Forwarded-Host).
        #expect(post(origin: "http://chat.example.com:8080", forwardedHost: "other.example") == .allow)
        #expect(post(origin: "http://evil.example", forwardedHost: "chat.example.com") != .allow)
        #expect(post(fetchSite: "same-site", origin: "https://chat.example.com", host: "10.0.0.5", forwardedHost: "chat.example.com") == .allow)
    }

    @Test func theReasonNamesTheHeaders() {
        #expect(
            CrossSiteCheck.Refusal.crossSite(origin: "http://evil.example").description
                == "Sec-Fetch-Site: cross-site, Origin http://evil.example")
        #expect(CrossSiteCheck.Refusal.crossSite(origin: nil).description == "Sec-Fetch-Site: cross-site")
        #expect(CrossSiteCheck.Refusal.otherOrigin("null", fetchSite: nil).description == "Origin null")
        #expect(
            CrossSiteCheck.Refusal.otherOrigin("http://a.example", fetchSite: "same-site").description
                == "Origin http://a.example, Sec-Fetch-Site: same-site")
        #expect(CrossSiteCheck.Refusal.noOrigin(fetchSite: "same-site").description == "Sec-Fetch-Site: same-site without an Origin")
        let long = "http://" + String(repeating: "a", count: 500)
        #expect(CrossSiteCheck.Refusal.otherOrigin(long, fetchSite: nil).description.count == "Origin ".count + 201)
    }
}
