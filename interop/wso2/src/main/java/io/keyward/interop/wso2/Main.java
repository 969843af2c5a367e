package io.keyward.interop.wso2;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Base64;

/**
 * A stand-in for WSO2 API Manager 4.7 that keyward's tests talk to: it encrypts, decrypts
 * and hashes as WSO2 does, with Java's own JCE, Gson and org.json. It was written from the
 * facts (with their WSO2 sources) in docs/wso2-interop.md, whose sections are cited below:
 * section 1 key handling, section 2 the decrypt rule, section 3 the ciphertext format,
 * section 5 hashed client secrets. It holds no WSO2 code.
 *
 * <p>Protocol: one JSON request per line on standard input, one JSON response per line on
 * standard output, in order, so one JVM serves a whole test. Bytes (plaintexts, secrets)
 * travel as standard padded Base64 so binary data round-trips. A request that fails gets
 * {@code {"error":"..."}}; errors never carry key material or plaintext.
 *
 * <pre>
 * {"op":"encrypt","key":K,"enableKeyId":bool,"ivLength":128|16,"plaintext":B64}
 *     -> {"value":V}     AES/GCM/NoPadding, self-contained, as CryptoUtil.encryptAndBase64Encode
 * {"op":"encryptLegacy","key":K,"plaintext":B64}
 *     -> {"value":V}     the older "t":"AES" (AES/ECB/PKCS5Padding) self-contained form
 * {"op":"decrypt","key":K,"oldKey":K|null,"enableKeyId":bool,"value":V}
 *     -> {"plaintext":B64} | {"error":E}   WSO2's decrypt rule (docs/wso2-interop.md section 2)
 * {"op":"keyId","key":K}
 *     -> {"keyId":S}     Base64 of SHA-256 of the decoded key, as written into ciphertext
 * {"op":"hash","secret":B64,"algorithm":A}
 *     -> {"record":S}    a hashed client secret record as WSO2 stores it (section 5)
 * </pre>
 *
 * <p>K is a key as written in deployment.toml's [encryption] table: 64 or 48 characters are
 * hex, anything else is used as its bytes (section 1). An absent, null or blank oldKey means
 * "unset", which WSO2 reads as the current key. ivLength defaults to 128, enableKeyId to
 * false (WSO2 4.7's default.json turns it on; the tests say which they mean).
 */
public final class Main {

    private Main() {}

    public static void main(String[] arguments) throws IOException {
        BufferedReader input =
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream output = new PrintStream(System.out, false, StandardCharsets.UTF_8);
        String line;
        while ((line = input.readLine()) != null) {
            if (line.isBlank()) {
                continue;
            }
            output.println(respond(line));
            output.flush();
        }
    }

    /** The response line to one request line. */
    static String respond(String line) {
        JsonObject response = new JsonObject();
        try {
            JsonObject request = JsonParser.parseString(line).getAsJsonObject();
            answer(request, response);
        } catch (ProtocolException | Wso2Crypto.CryptoFailure failure) {
            response = new JsonObject();
            response.addProperty("error", failure.getMessage());
        } catch (RuntimeException unexpected) {
            // Class name only: a message could echo request content.
            response = new JsonObject();
            response.addProperty("error", "request failed: " + unexpected.getClass().getName());
        }
        return response.toString();
    }

    private static void answer(JsonObject request, JsonObject response)
            throws ProtocolException, Wso2Crypto.CryptoFailure {
        String operation = text(request, "op");
        switch (operation) {
            case "encrypt" -> response.addProperty("value", configuration(request)
                    .encrypt(bytes(request, "plaintext"), ivLength(request)));
            case "encryptLegacy" -> response.addProperty("value", configuration(request)
                    .encryptLegacy(bytes(request, "plaintext")));
            case "decrypt" -> response.addProperty("plaintext", Base64.getEncoder()
                    .encodeToString(configuration(request).decrypt(text(request, "value"))));
            case "keyId" -> response.addProperty("keyId", configuration(request).keyId());
            case "hash" -> response.addProperty("record",
                    HashedRecord.render(bytes(request, "secret"), text(request, "algorithm")));
            default -> throw new ProtocolException("unknown op " + operation);
        }
    }

    /** The [encryption] settings a request names: key, old_key, enable_key_id. */
    private static Wso2Crypto configuration(JsonObject request)
            throws ProtocolException, Wso2Crypto.CryptoFailure {
        String oldKey = request.has("oldKey") && !request.get("oldKey").isJsonNull()
                ? request.get("oldKey").getAsString()
                : null;
        boolean enableKeyId = request.has("enableKeyId") && request.get("enableKeyId").getAsBoolean();
        return Wso2Crypto.configure(text(request, "key"), oldKey, enableKeyId);
    }

    private static int ivLength(JsonObject request) throws ProtocolException {
        int length = request.has("ivLength") ? request.get("ivLength").getAsInt() : 128;
        if (length != 128 && length != 16) {
            throw new ProtocolException("ivLength must be 128 (WSO2 4.7) or 16 (older releases)");
        }
        return length;
    }

    private static String text(JsonObject request, String field) throws ProtocolException {
        if (!request.has(field) || request.get(field).isJsonNull()) {
            throw new ProtocolException("request has no " + field);
        }
        return request.get(field).getAsString();
    }

    private static byte[] bytes(JsonObject request, String field) throws ProtocolException {
        try {
            return Base64.getDecoder().decode(text(request, field));
        } catch (IllegalArgumentException invalid) {
            throw new ProtocolException(field + " is not Base64");
        }
    }

    /** A request this program cannot read. */
    static final class ProtocolException extends Exception {
        ProtocolException(String message) {
            super(message);
        }
    }
}
