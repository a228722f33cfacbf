// llm-harness TEST STAND-IN for libnvinfer_plugin_tensorrt_llm. NOT TensorRT-LLM.
// The shim registers TensorRT-LLM's plugins before it builds an Executor; the stand-in
// has no TensorRT and no plugins, so registration is a no-op that succeeds.
extern "C" bool initTrtLlmPlugins(void* /*logger*/, char const* /*libNamespace*/) { return true; }
