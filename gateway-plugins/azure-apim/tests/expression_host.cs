// Runs the plugin's APIM policy expressions, compiled as they are written, against a context built
// from JSON. The context types mirror the members APIM documents for policy expressions (only those);
// APIM itself cannot run here. One JSON request per line on stdin, one JSON reply per line on stdout:
//   {"n": <expression number>, "state": {...}}  ->  {"ok": true, "value": ..., "consumed": [...]}
using System;
using System.Collections.Generic;
using System.Linq;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

public interface IMessageBody
{
    T As<T>(bool preserveContent = false);
}

public interface IResponse
{
    IMessageBody Body { get; }
    IReadOnlyDictionary<string, string[]> Headers { get; }
    int StatusCode { get; }
    string StatusReason { get; }
}

public sealed class MessageBody : IMessageBody
{
    private readonly string text;
    public readonly string Owner;
    public bool Consumed;
    public bool WasConsumed;

    public MessageBody(string text, string owner) { this.text = text; Owner = owner; }

    public T As<T>(bool preserveContent = false)
    {
        if (Consumed) { throw new InvalidOperationException("the body was already read without preserveContent"); }
        if (!preserveContent) { Consumed = true; }
        object value;
        if (typeof(T) == typeof(string)) { value = text; }
        else if (typeof(T) == typeof(JObject)) { value = JObject.Parse(text); }
        else if (typeof(T) == typeof(JArray)) { value = JArray.Parse(text); }
        else if (typeof(T) == typeof(JToken)) { value = JToken.Parse(text); }
        else { throw new NotSupportedException(typeof(T).Name); }
        return (T)value;
    }
}

public sealed class Response : IResponse
{
    public IMessageBody Body { get; set; }
    public IReadOnlyDictionary<string, string[]> Headers { get; set; }
    public int StatusCode { get; set; }
    public string StatusReason { get; set; }
}

public sealed class Request
{
    public IMessageBody Body { get; set; }
    public IReadOnlyDictionary<string, string[]> Headers { get; set; }
    public string Method { get; set; }
}

public sealed class Named
{
    public string Id { get; set; }
    public string Name { get; set; }
}

public sealed class Jwt
{
    public IReadOnlyDictionary<string, string[]> Claims { get; set; }
}

public sealed class Context
{
    public Named Api { get; set; }
    public Named Product { get; set; }
    public Named Subscription { get; set; }
    public Request Request { get; set; }
    public Response Response { get; set; }
    public Guid RequestId { get; set; }
    public IReadOnlyDictionary<string, object> Variables { get; set; }
    public readonly List<MessageBody> Bodies = new List<MessageBody>();
}

public static class PolicyExtensions
{
    // Documented: comma-separated values, or the default when the name is absent.
    public static string GetValueOrDefault(this IReadOnlyDictionary<string, string[]> values, string name, string defaultValue)
    {
        string[] found;
        return values.TryGetValue(name, out found) ? string.Join(",", found) : defaultValue;
    }

    // Documented: the variable cast to T (throws when it is another type), or the default.
    public static T GetValueOrDefault<T>(this IReadOnlyDictionary<string, object> variables, string name, T defaultValue)
    {
        object found;
        if (!variables.TryGetValue(name, out found)) { return defaultValue; }
        return (T)found;
    }
}

public static class Host
{
    static IReadOnlyDictionary<string, string[]> Headers(JToken json)
    {
        var headers = new Dictionary<string, string[]>(StringComparer.OrdinalIgnoreCase);
        if (json is JObject)
        {
            foreach (var pair in (JObject)json) { headers[pair.Key] = pair.Value.Select(v => (string)v).ToArray(); }
        }
        return headers;
    }

    static MessageBody Body(Context context, JToken message, string owner)
    {
        JToken json = message["body"];
        if (json == null || json.Type == JTokenType.Null) { return null; }
        var body = new MessageBody((string)json, owner);
        body.Consumed = body.WasConsumed = message["consumed"] != null && (bool)message["consumed"];
        context.Bodies.Add(body);
        return body;
    }

    static Named NamedOrNull(JToken json)
    {
        if (json == null || json.Type == JTokenType.Null) { return null; }
        return new Named { Id = (string)json["id"], Name = (string)json["name"] };
    }

    static Response ResponseOf(Context context, JToken json, string owner)
    {
        return new Response
        {
            StatusCode = (int)json["status"],
            StatusReason = (string)json["reason"] ?? "",
            Headers = Headers(json["headers"]),
            Body = Body(context, json, owner),
        };
    }

    static Context Build(JObject state)
    {
        var context = new Context();
        context.Api = NamedOrNull(state["api"]);
        context.Product = NamedOrNull(state["product"]);
        context.Subscription = NamedOrNull(state["subscription"]);
        context.RequestId = Guid.Parse((string)state["requestId"]);
        var request = (JObject)state["request"];
        context.Request = new Request
        {
            Method = (string)request["method"],
            Headers = Headers(request["headers"]),
            Body = Body(context, request, "request"),
        };
        if (state["response"] != null && state["response"].Type != JTokenType.Null)
        {
            context.Response = ResponseOf(context, state["response"], "response");
        }
        var variables = new Dictionary<string, object>();
        foreach (var pair in (JObject)state["variables"])
        {
            JToken value = pair.Value;
            if (value.Type == JTokenType.Object && value["$response"] != null)
            {
                variables[pair.Key] = value["$response"].Type == JTokenType.Null ? null : ResponseOf(context, value["$response"], "var:" + pair.Key);
            }
            else if (value.Type == JTokenType.Object && value["$jwt"] != null) { variables[pair.Key] = new Jwt { Claims = Headers(value["$jwt"]) }; }
            else if (value.Type == JTokenType.Boolean) { variables[pair.Key] = (bool)value; }
            else if (value.Type == JTokenType.Integer) { variables[pair.Key] = (int)value; }
            else if (value.Type == JTokenType.Null) { variables[pair.Key] = null; }
            else { variables[pair.Key] = (string)value; }
        }
        context.Variables = variables;
        return context;
    }

    public static void Main()
    {
        string line;
        while ((line = Console.In.ReadLine()) != null)
        {
            var request = JObject.Parse(line);
            var reply = new JObject();
            Context context = null;
            try
            {
                context = Build((JObject)request["state"]);
                object value = Expressions.Run((int)request["n"], context);
                reply["ok"] = true;
                reply["type"] = value == null ? "null" : value.GetType().Name;
                reply["value"] = value == null ? new JValue((object)null) : value is JToken ? new JValue(((JToken)value).ToString(Formatting.None)) : JToken.FromObject(value);
            }
            catch (Exception error)
            {
                reply["ok"] = false;
                reply["error"] = error.GetType().Name + ": " + error.Message;
            }
            reply["consumed"] = new JArray(context == null ? new string[0] : context.Bodies.Where(b => b.Consumed && !b.WasConsumed).Select(b => b.Owner).ToArray());
            Console.Out.WriteLine(reply.ToString(Formatting.None));
            Console.Out.Flush();
        }
    }
}
