"""A werkzeug client of the Spectrum plugin's routes over a log folder, as
TensorBoard serves them (tests of the callback, the blocks and the loop
read what they wrote through it)."""

from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from werkzeug import test as werkzeug_test
from werkzeug import wrappers

from tb_plugin import metadata
from tb_plugin import plugin as plugin_lib


def plugin_client(logdir):
  mux = plugin_event_multiplexer.EventMultiplexer(
      tensor_size_guidance={metadata.PLUGIN_NAME: 0})
  mux.AddRunsFromDirectory(logdir)
  mux.Reload()
  ctx = base_plugin.TBContext(
      logdir=logdir, multiplexer=mux,
      data_provider=tb_data_provider.MultiplexerDataProvider(mux, logdir))
  plugin = plugin_lib.SpectrumPlugin(ctx)
  return werkzeug_test.Client(plugin_app(plugin), wrappers.Response)


def plugin_app(plugin):
  apps = plugin.get_plugin_apps()

  def app(environ, start_response):
    return apps[environ["PATH_INFO"]](environ, start_response)
  return app
