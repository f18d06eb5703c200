import Crypto
import Foundation

/// Signed cookie values exactly as the npm package `cookie-signature` (used by express-session) makes
/// them: `value + "." + base64(HMAC-SHA256(key: secret, data: value))` with the `=` padding removed.
public enum CookieSignature {
    /// `value.signature`.
    public static func sign(_ value: String, secret: String) -> String {
        value + "." + signature(of: value, secret: secret)
    }

    /// The value when `signed` carries a valid signature by one of `secrets`, else nil.
    /// The comparison runs in constant time over the signature's bytes.
    public static func unsign(_ signed: String, secrets: [String]) -> String? {
        guard let dot = signed.lastIndex(of: ".") else { return nil }
        let value = String(signed[..<dot])
        let given = Array(signed.utf8[signed.utf8.index(after: dot)...])
        for secret in secrets where constantTimeEqual(Array(signature(of: value, secret: secret).utf8), given) {
            return value
        }
        return nil
    }

    static func signature(of value: String, secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data(value.utf8), using: SymmetricKey(data: Data(secret.utf8)))
        var text = Data(mac).base64EncodedString()
        while text.hasSuffix("=") { text.removeLast() }
        return text
    }

    private static func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
        return difference == 0
    }
}
