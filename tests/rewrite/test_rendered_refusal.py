"""The refusal seen by a real renderer: a refused copy makes headless Chromium load nothing remote.

For each message of the corpus the test makes the copy for a refused recipient
(``prepare`` then ``decide``, as the relay does), reads its HTML parts with
Python's ``email`` and renders them in Chromium (:mod:`tests.rewrite.renderer`:
JavaScript off as in mail clients, no host but loopback resolves, every request
attempt logged).  The tracker host resolves to a loopback listener (a trap) that
counts connections, so a connection that sends no request (``<link rel=preconnect>``)
counts too; refused copies render in browsers of their own, whose traps must stay
untouched to the end.  A held copy sends nothing and passes.  Each case carries its own
tracker URL (``/p/<case>``, the recipient's address URL-encoded in it, which makes
it a tracker by the product's definition); as a control the original message is
rendered the same way and must request it, else the case proves nothing.

The corpus: attack snippets a browser engine loads (:data:`SNIPPETS`, each as a
``text/html`` message, a subset also base64/QP-encoded), MIME-level cases
(:func:`mime_cases`), and the real templates of ``../shared/data/templates`` with
the tracker injected in many places (:func:`template_cases`).  Snippets: no remote
URL but the tracker, so the copy may request nothing remote at all; templates keep
their own visible images (not beacons): there, no request may reach the tracker host.

A few cases render with JavaScript on as well (``<noscript>`` holds raw text then).
"""

from __future__ import annotations

import base64
import quopri
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.copies import CopyPolicy, Decided, decide, prepare
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.rules import load_rules
from tests.rewrite.renderer import PATIENT, Renderer, html_parts, renderer

ENGINE = Engine(load_rules())
RCPT = "reader@example.org"
HOST = "t.oracle-tracker.example"
TEMPLATES = Path(__file__).resolve().parents[3] / "shared" / "data" / "templates"
TEMPLATE_FILES = sorted(TEMPLATES.glob("*.html")) if TEMPLATES.is_dir() else []
HEAD = ("From: News <news@shop.example>\nTo: reader@example.org\nSubject: offers\n"
        "Message-ID: <r1@shop.example>\nMIME-Version: 1.0\n")


def tracker(case: str, ext: str = "gif") -> str:
    """The case's tracker URL: its address identifies the recipient."""
    return f"https://{HOST}/p/{case}.{ext}?e=reader%40example.org"


def crlf(text: str, charset: str = "utf-8") -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode(charset, "surrogateescape")


def html_message(html: bytes, ctype: str = "text/html; charset=utf-8", cte: str = "8bit"
                 ) -> bytes:
    if cte == "base64":
        body = base64.encodebytes(html)
    elif cte == "quoted-printable":
        body = quopri.encodestring(html)
    else:
        body = html
    head = crlf(HEAD + f"Content-Type: {ctype}\nContent-Transfer-Encoding: {cte}\n\n")
    return head + body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"


# -- snippets: {U} is the tracker URL, {H} its host, {Q} its path and query ------------------

_SVG_IMG = ("<svg xmlns='http://www.w3.org/2000/svg' xmlns:xlink='http://www.w3.org/1999/xlink'>"
            "<image href='{U}' width='10' height='10'/></svg>")

SNIPPETS: dict[str, str] = {
    # <img> and friends
    "img": '<p>Hi <img src="{U}" width="1" height="1"></p>',
    "img_big": '<img src="{U}" width="600" height="300" alt="Hero">',
    "img_unquoted": "<img src={U}>",
    "img_single_quoted": "<img src='{U}'>",
    "img_upper": '<IMG SRC="{U}">',
    "img_slash_sep": '<img/src="{U}">',
    "img_ff_sep": '<img\fsrc="{U}">',
    "img_spaces_eq": '<img src = "{U}" >',
    "img_newline_in_value": '<img src="\n {U}\n">',
    "img_tab_in_scheme": '<img src="ht\ttps://{H}{Q}">',
    "img_newline_in_host": '<img src="https://t.oracle-\ntracker.example{Q}">',
    "img_entity_scheme": '<img src="&#104;ttps://{H}{Q}">',
    "img_hex_entity": '<img src="htt&#x70;s://{H}{Q}">',
    "img_colon_entity": '<img src="https&colon;//{H}{Q}">',
    "img_entity_no_semicolon": '<img src="https&#58//{H}{Q}">',
    "img_protocol_relative": '<img src="//{H}{Q}">',
    "img_backslashes": '<img src="\\\\{H}{Q}">',
    "img_scheme_no_slashes": '<img src="https:{H}{Q}">',
    "img_scheme_one_slash": '<img src="https:/{H}{Q}">',
    "img_upper_scheme": '<img src="HTTPS://{H}{Q}">',
    "img_dup_src_first": '<img src="{U}" src="data:,">',
    "img_after_junk_attr": '<img x=a"b src="{U}">',
    "img_quote_in_name": '<img a"="x" src="{U}">',
    "img_lazy": '<div style="height:3000px">x</div><img loading="lazy" src="{U}">',
    "img_srcset": '<img srcset="{U} 1x">',
    "img_srcset_w": '<img srcset="{U} 100w" sizes="100px">',
    "img_srcset_data_src": '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" '
                           'srcset="{U} 1x">',
    "img_srcset_comma_url": '<img srcset="{U}&x=1,2 1x">',
    "picture": '<picture><source srcset="{U}"><img src="data:,"></picture>',
    "picture_media": '<picture><source media="(min-width: 1px)" srcset="{U} 1x">'
                     '<img src="data:,"></picture>',
    "image_tag": '<image src="{U}">',
    "input_image": '<input type="image" src="{U}">',
    "input_image_upper": '<input type=IMAGE src={U}>',
    "img_in_hidden": '<div style="display:none"><img src="{U}"></div>',
    "img_in_map": '<map name=m><img src="{U}"></map>',
    # background attributes
    "body_background": '<body background="{U}"><p>x</p></body>',
    "table_background": '<table background="{U}"><tr><td>x</td></tr></table>',
    "td_background": '<table><tr><td background="{U}">x</td></tr></table>',
    "th_background": '<table><tr><th background="{U}">x</th></tr></table>',
    "tr_background": '<table><tr background="{U}"><td>x</td></tr></table>',
    "tbody_background": '<table><tbody background="{U}"><tr><td>x</td></tr></tbody></table>',
    "thead_background": '<table><thead background="{U}"><tr><td>x</td></tr></thead></table>',
    "tfoot_background": '<table><tfoot background="{U}"><tr><td>x</td></tr></tfoot></table>',
    # media, embedding
    "video_poster": '<video poster="{U}" width="100" height="100"></video>',
    "video_src": '<video src="{U}"></video>',
    "video_source": '<video><source src="{U}"></video>',
    "audio_src": '<audio src="{U}"></audio>',
    "audio_source": '<audio><source src="{U}" type="audio/mpeg"></audio>',
    "video_track": '<video src="data:,"><track default kind="subtitles" src="{U}"></video>',
    "object_data": '<object data="{U}" width="10" height="10"></object>',
    "object_image": '<object data="{U}" type="image/gif"></object>',
    "embed": '<embed src="{U}" type="image/gif">',
    "iframe": '<iframe src="{U}"></iframe>',
    "iframe_lazy": '<div style="height:3000px">x</div><iframe loading=lazy src="{U}"></iframe>',
    "frameset": '<frameset><frame src="{U}"></frameset>',
    "iframe_srcdoc": '<iframe srcdoc="<img src=&quot;{U}&quot;>"></iframe>',
    "iframe_data_html": '<iframe src="data:text/html,<img src=%22{U}%22>"></iframe>',
    "iframe_data_b64": '<iframe src="data:text/html;base64,{B64IMG}"></iframe>',
    "object_data_html": '<object data="data:text/html,<img src=%22{U}%22>"></object>',
    "object_data_svg": '<object data="data:image/svg+xml,{SVGQ}" type="image/svg+xml"></object>',
    "embed_data_svg": '<embed src="data:image/svg+xml,{SVGQ}" type="image/svg+xml">',
    "iframe_data_svg": '<iframe src="data:image/svg+xml,{SVGQ}"></iframe>',
    # <link>
    "link_stylesheet": '<link rel="stylesheet" href="{U}">',
    "link_stylesheet_upper": '<LINK REL=STYLESHEET HREF={U}>',
    "link_stylesheet_in_body": '<p>x</p><link rel="stylesheet" href="{U}">',
    "link_alternate_stylesheet": '<link rel="alternate stylesheet" href="{U}" title="b">',
    "link_preload_image": '<link rel="preload" as="image" href="{U}">',
    "link_preload_imagesrcset": '<link rel="preload" as="image" imagesrcset="{U} 1x">',
    "link_preload_style": '<link rel="preload" as="style" href="{U}">',
    "link_preload_font": '<link rel="preload" as="font" crossorigin href="{U}">',
    "link_prefetch": '<link rel="prefetch" href="{U}">',
    "link_preconnect": '<link rel="preconnect" href="{U}">',  # a connection, no request
    "link_preconnect_hints": '<link rel="dns-prefetch preconnect" href="{U}" crossorigin>',
    "link_icon": '<link rel="icon" href="{U}">',
    "link_shortcut_icon": '<link rel="shortcut icon" href="{U}">',
    "link_modulepreload": '<link rel="modulepreload" href="{U}">',
    # hints, icons and manifests to a host and path that identify nobody: no tracker,
    # yet they tell the host the mail is open, and show nothing (stripped: invisible-load)
    "hint_preconnect_plain": '<link rel="preconnect" href="https://{H}">',
    "hint_dns_prefetch_preconnect_plain": '<link rel="dns-prefetch preconnect" '
                                          'href="//{H}" crossorigin>',
    "hint_prefetch_plain": '<link rel="prefetch" href="https://{H}/assets/app.js">',
    "hint_preload_plain": '<link rel="preload" as="image" href="https://{H}/img/hero.jpg">',
    "hint_preload_imagesrcset_plain": '<link rel="preload" as="image" '
                                      'imagesrcset="https://{H}/img/a.jpg 1x, '
                                      'https://{H}/img/a2.jpg 2x">',
    "hint_icon_plain": '<link rel="icon" href="https://{H}/favicon.ico">',
    "hint_in_body_plain": '<p>Offers</p><LINK REL=PRECONNECT HREF=https://{H}/>',
    # media that shows nothing (no controls, hidden, tiny) with a token that names nobody
    # by itself: its source or track takes its box, a hidden load with an identifier
    "media_audio_token": '<p>Offers</p><audio src="https://{H}/o/8f3a2b1c9d.mp3"></audio>',
    "media_audio_source_token": '<audio><source src="https://{H}/o/8f3a2b1c9d.mp3" '
                                'type="audio/mpeg"></audio><p>Offers</p>',
    "media_video_hidden_source_token": '<video style="display:none"><source '
                                       'src="https://{H}/o/8f3a2b1c9d.mp4" type="video/mp4">'
                                       "</video><p>Offers</p>",
    "media_video_tiny_source_token": '<video width="1" height="1"><source '
                                     'src="https://{H}/o/8f3a2b1c9d.webm"></video>',
    # An inline style's cascade: an invalid or empty later display, or one an earlier
    # !important beats, leaves the element hidden.
    "hide_invalid_later_display_token": '<p>Offers</p><div style="display:none;display:blok">'
                                        '<img src="https://{H}/o/8f3a2b1c9d.gif" width="600" '
                                        'height="300"></div>',
    "hide_important_then_block_token": '<p>Offers</p><div style="display:none !important;'
                                       'display:block"><img src="https://{H}/o/8f3a2b1c9d.gif" '
                                       'width="600" height="300"></div>',
    "img_visibility_important_token": '<p>Offers</p><img style="visibility:hidden!important;'
                                      'visibility:visible" src="https://{H}/o/8f3a2b1c9d.gif" '
                                      'width="600" height="300">',
    "hidden_attr_invalid_display_token": '<p>Offers</p><div hidden style="display:blok"><img '
                                         'src="https://{H}/o/8f3a2b1c9d.gif" width="600" '
                                         'height="300"></div>',
    "hidden_attr_lt_in_alt_token": '<img alt="<" hidden src="https://{H}/o/8f3a2b1c9d.gif" '
                                   'width="600" height="300"><p>Offers</p>',
    "hidden_attr_entity_style_token": '<div hidden style="font-family:&quot;Open Sans&quot;">'
                                      '<img src="https://{H}/o/8f3a2b1c9d.gif"></div>',
    "hidden_attr_picture_token": '<picture><source srcset="https://{H}/o/8f3a2b1c9d.gif">'
                                 '<img hidden src="data:,"></picture><p>Offers</p>',
    "hint_compression_dictionary_plain": '<link rel="compression-dictionary" '
                                         'href="https://{H}/dictionary">',
    "hint_on_a_sheet_that_never_loads_plain": '<link rel="stylesheet preconnect" '
                                              'type="text/plain" href="https://{H}/">',
    "hidden_attr_quote_trick_token": '<p title="<b title=\'">\'<div hidden><img '
                                     'src="https://{H}/o/8f3a2b1c9d.gif" width="600" '
                                     'height="300"></div><p>Offers</p>',
    "media_end_tag_in_value_token": '<video width=1 height=1><p title="</video>">x</p><source '
                                    'src="https://{H}/o/8f3a2b1c9d.mp4"></video>',
    "media_fallback_img_token": '<p>x</p><video controls width="300" height="200"><img '
                                'src="https://{H}/o/8f3a2b1c9d.gif" width="600" height="300">'
                                "</video>",
    "picture_comment_between_token": '<picture><source srcset="https://{H}/o/8f3a2b1c9d.gif">'
                                     '<!-- x --><img src="data:," width="1" height="1"></picture>',
    "frame_tiny_srcdoc_token": '<p>x</p><iframe width="1" height="1" srcdoc="<img '
                               'src=&quot;https://{H}/o/8f3a2b1c9d.gif&quot; width=600 '
                               'height=300>"></iframe>',
    "frame_tiny_token": '<p>Offers</p><iframe src="https://{H}/o/8f3a2b1c9d" width="0" '
                        'height="0" style="border:0"></iframe>',
    "frame_hidden_style_token": '<iframe src="https://{H}/o/8f3a2b1c9d" '
                                'style="display:none"></iframe><p>Offers</p>',
    "frame_hidden_attr_token": '<iframe src="https://{H}/o/8f3a2b1c9d" hidden></iframe>',
    "frame_object_tiny_token": '<object data="https://{H}/o/8f3a2b1c9d.html" type="text/html" '
                               'width="1" height="1"></object>',
    "frame_in_hidden_div_token": '<div style="display:none"><iframe '
                                 'src="https://{H}/o/8f3a2b1c9d"></iframe></div>',
    "media_video_in_hidden_div_token": '<div style="display:none"><video><source '
                                       'src="https://{H}/o/8f3a2b1c9d.mp4"></video></div>',
    # hidden by the hidden attribute ([hidden]{display:none}), with a token that names
    # nobody by itself: a hidden image with an identifier is a tracker
    "hidden_attr_img_token": '<p>Offers</p><img src="https://{H}/o/8f3a2b1c9d.gif" hidden>',
    "hidden_attr_div_token": '<div hidden><img src="https://{H}/o/8f3a2b1c9d.gif" '
                             'width="600" height="300"></div><p>Offers</p>',
    "hidden_attr_td_token": '<table><tr><td hidden><img src="https://{H}/o/8f3a2b1c9d.png">'
                            "</td><td>Offers</td></tr></table>",
    "link_stylesheet_data_import": '<link rel="stylesheet" '
                                   'href="data:text/css,@import url({U});">',
    "link_stylesheet_data_bg": '<link rel="stylesheet" '
                               'href="data:text/css,body{{background:url({U})}}">',
    "link_stylesheet_data_b64": ('<link rel="stylesheet" href="data:text/css;base64,{B64CSS}">'
                                 "<p>x</p>"),
    # refresh, base
    "meta_refresh": '<meta http-equiv="refresh" content="0;url={U}">',
    "meta_refresh_quoted": "<meta http-equiv=refresh content=\"0; URL='{U}'\">",
    "meta_refresh_no_url": '<meta http-equiv="Refresh" content="0, {U}">',
    "meta_refresh_in_body": '<p>x</p><meta http-equiv="refresh" content="0;url={U}">',
    # Chromium reads a refresh its own way (session 17): the last matching quote ends the
    # URL, Unicode blanks around the delay and the URL are stripped
    "meta_refresh_last_quote": "<meta http-equiv=refresh content=\"0;url='{U}'x'\">",
    "meta_refresh_emsp_url": '<meta http-equiv="refresh" content="0;url=&emsp;{U}">',
    "meta_refresh_ideographic_url": '<meta http-equiv="refresh" content="0;url=\u3000{U}">',
    "meta_refresh_vt_delay": '<meta http-equiv="refresh" content="0&#11;;url={U}">',
    "meta_refresh_emsp_delay": '<meta http-equiv="refresh" content="&emsp;0;URL={U}">',
    "meta_refresh_emsp_comma": '<meta http-equiv="refresh" content="0\u2003,{U}">',
    "base_relative_img": '<base href="https://{H}/p/"><img src="base_relative_img.gif'
                         '?e=reader%40example.org">',
    "base_relative_css": '<base href="https://{H}/p/"><p style="background:url('
                         'base_relative_css.gif?e=reader%40example.org)">x</p>',
    "base_relative_link": '<base href="https://{H}/p/"><link rel=stylesheet '
                          'href="base_relative_link.css?e=reader%40example.org">',
    "base_protocol_relative": '<base href="//{H}/p/"><img src="base_protocol_relative.gif'
                              '?e=reader%40example.org">',
    "base_in_body": '<p>x</p><base href="https://{H}/p/"><img src="base_in_body.gif'
                    '?e=reader%40example.org">',
    # The scanner's first <base> is one a browser never sees.
    "base_after_template": '<template><base href="cid:x"></template><base href="https://{H}/p/">'
                           '<img src="base_after_template.gif?e=reader%40example.org">',
    "base_after_conditional": '<!--[if mso]><base href="cid:x"><![endif]-->'
                              '<base href="https://{H}/p/"><p>x</p>'
                              '<img src="base_after_conditional.gif?e=reader%40example.org">',
    "base_backslashes": '<base href="https://{H}\\p\\[/"><p>x</p>'
                        '<img src="base_backslashes.gif?e=reader%40example.org">',
    "base_srcdoc_inherited": '<base href="https://{H}/p/"><p>x</p><iframe srcdoc="<img src='
                             '&quot;base_srcdoc_inherited.gif?e=reader%40example.org&quot;>">'
                             '</iframe>',
    "base_srcdoc_css": '<base href="https://{H}/p/"><p>x</p><iframe srcdoc="<p style=&quot;'
                       'background:url(base_srcdoc_css.gif?e=reader%40example.org)&quot;>x">'
                       '</iframe>',
    "base_inside_srcdoc": '<iframe srcdoc="<base href=https://{H}/p/>'
                          '<img src=base_inside_srcdoc.gif?e=reader%40example.org>"></iframe>',
    "srcdoc_three_deep": '<iframe srcdoc="<iframe srcdoc=&quot;<iframe srcdoc=&amp;quot;'
                         '<img src=&amp;amp;quot;{U}&amp;amp;quot;>&amp;quot;></iframe>&quot;>'
                         '</iframe>"></iframe>',
    # foreign content, frameset and noscript written with &lt; in a srcdoc: the part's own
    # text holds no "<svg" (session 16's attack)
    "srcdoc_svg_xmp": '<iframe srcdoc="&lt;svg>&lt;xmp>&lt;img src={U}>"></iframe>',
    "srcdoc_svg_style_img": '<iframe srcdoc="&lt;svg>&lt;style>&lt;img src={U}>"></iframe>',
    "srcdoc_math_style_img": '<iframe srcdoc="&lt;math>&lt;style>&lt;img src={U}>"></iframe>',
    "srcdoc_svg_title": '<iframe srcdoc="&lt;svg>&lt;title>&lt;img src={U}>"></iframe>',
    "srcdoc_svg_import_entity": '<iframe srcdoc="&lt;svg>&lt;style>@&amp;#105;mport \'{U}\'">'
                                "</iframe>",
    "srcdoc_hex_lt": '<iframe srcdoc="&#x3c;svg>&#x3c;xmp>&#x3c;img src={U}>"></iframe>',
    "srcdoc_frameset_style": '<iframe srcdoc="&lt;frameset>&lt;style>&lt;frame src={U}>">'
                             "</iframe>",
    "srcdoc_nested_svg": '<iframe srcdoc="&lt;iframe srcdoc=&quot;&amp;lt;svg>&amp;lt;xmp>'
                         '&amp;lt;img src={U}>&quot;>"></iframe>',
    "srcdoc_noscript_title": '<iframe srcdoc="&lt;noscript>&lt;p title=\'&lt;/noscript>'
                             '&lt;img src={U}>\'>"></iframe>',
    "srcdoc_tiny_svg": '<p>x</p><iframe width="1" height="1" srcdoc="&lt;svg>&lt;xmp>'
                       '&lt;img src={U}>"></iframe>',
    # CSS in a style attribute
    "style_bg": '<p style="background:url({U})">x</p>',
    "style_bg_image_quoted": "<p style=\"background-image:url('{U}')\">x</p>",
    "style_bg_spaces": '<p style="background-image: url(  &quot;{U}&quot;  )">x</p>',
    "style_entity_paren": '<p style="background:url&#40;{U}&#41;">x</p>',
    "style_lpar": '<p style="background:url&lpar;{U}&rpar;">x</p>',
    "style_escaped_url_name": '<p style="background:u\\72l({U})">x</p>',
    "style_escaped_url_name_ws": '<p style="background:u\\72 l({U})">x</p>',
    "style_escaped_property": '<p style="back\\67 round:url({U})">x</p>',
    "style_escape_in_url": '<p style="background:url(\\68 ttps://{H}{Q})">x</p>',
    "style_escape_in_quoted_url": "<p style=\"background:url('h\\74tps://{H}{Q}')\">x</p>",
    "style_newline_in_url_string": "<p style=\"background:url('https://{H}\\\n{Q}')\">x</p>",
    "style_comment_before": '<p style="background:/**/url({U})">x</p>',
    "style_unclosed_url": '<p style="background:url({U}">x</p>',
    "style_image_set": '<p style="background-image:image-set(&quot;{U}&quot; 1x)">x</p>',
    "style_image_set_url": '<p style="background-image:image-set(url({U}) 1x)">x</p>',
    "style_webkit_image_set": '<p style="background-image:-webkit-image-set(url({U}) 1x)">x</p>',
    "style_cross_fade": '<p style="background-image:-webkit-cross-fade(url({U}), '
                        'url(data:,), 50%)">x</p>',
    "style_cursor": '<p style="cursor:url({U}),auto">x</p>',
    "style_list_style_image": '<ul><li style="list-style-image:url({U})">x</li></ul>',
    "style_list_style": '<ul style="list-style:url({U}) inside"><li>x</li></ul>',
    "style_border_image": '<p style="border:10px solid;border-image:url({U}) 30 round">x</p>',
    "style_border_image_source": '<p style="border:10px solid;border-image-source:url({U})">'
                                 'x</p>',
    "style_mask": '<p style="mask:url({U})">x</p>',
    "style_webkit_mask": '<p style="-webkit-mask-image:url({U})">x</p>',
    "style_webkit_mask_box": '<p style="-webkit-mask-box-image:url({U})">x</p>',
    "style_shape_outside": '<p style="float:left;shape-outside:url({U});width:9px">x</p>',
    "style_filter": '<p style="filter:url({U}#f)">x</p>',
    "style_custom_property": '<p style="--x:url({U});background:var(--x)">x</p>',
    "style_important": '<p style="background:url({U}) !important">x</p>',
    "style_dup_attr": '<p style="background:url({U})" style="">x</p>',
    "style_on_body": '<body style="background:url({U})">x</body>',
    "style_content_img": '<img style="content:url({U})" src="data:,">',
    # CSS in <style>
    "css_block": '<style>p{{background:url({U})}}</style><p>x</p>',
    "css_import": '<style>@import url({U});</style>',
    "css_import_string": '<style>@import "{U}";</style>',
    "css_import_media": "<style>@import '{U}' screen;</style>",
    "css_import_layer": '<style>@import url({U}) layer(x);</style>',
    "css_import_escaped": '<style>@\\69mport "{U}";</style>',
    "css_import_upper": '<style>@IMPORT "{U}";</style>',
    "css_font_face": '<style>@font-face{{font-family:z;src:url({U})}} p{{font-family:z}}'
                     '</style><p>x</p>',
    "css_font_face_format": '<style>@font-face{{font-family:z;src:local(q),url({U}) '
                            'format("woff")}} p{{font-family:z}}</style><p>x</p>',
    "css_content_before": '<style>p::before{{content:url({U})}}</style><p>x</p>',
    "css_media": '<style>@media all{{p{{background:url({U})}}}}</style><p>x</p>',
    "css_media_screen_and": '<style>@media screen and (min-width:1px){{p{{background:url({U})}}'
                            '}}</style><p>x</p>',
    "css_supports": '<style>@supports (display:block){{p{{background:url({U})}}}}</style>'
                    '<p>x</p>',
    "css_layer": '<style>@layer a{{p{{background:url({U})}}}}</style><p>x</p>',
    "css_container": '<style>div{{container-type:inline-size}}@container (min-width:1px)'
                     '{{p{{background:url({U})}}}}</style><div><p>x</p></div>',
    "css_nesting": '<style>div{{color:red;& p{{background:url({U})}}}}</style><div><p>x</p></div>',
    "css_nesting_bare": '<style>div{{p{{background:url({U})}}}}</style><div><p>x</p></div>',
    "css_scope": '<style>@scope (div){{p{{background:url({U})}}}}</style><div><p>x</p></div>',
    "css_starting_style": '<style>@starting-style{{p{{background:url({U})}}}}</style><p>x</p>',
    "css_custom_property": '<style>:root{{--x:url({U})}}p{{background:var(--x)}}</style><p>x</p>',
    "css_custom_property_registered": '<style>@property --y{{syntax:"<image>";inherits:true;'
                                      'initial-value:url({U})}}p{{background-image:var(--y)}}'
                                      '</style><p>x</p>',
    "css_comment_in_url_fn": '<style>p{{background:url/**/({U})}}</style><p>x</p>',
    "css_cdo_cdc": '<style><!-- p{{background:url({U})}} --></style><p>x</p>',
    "css_escaped_url": '<style>p{{background:\\75 rl({U})}}</style><p>x</p>',
    "css_escape_newline_url": '<style>p{{background:url("https://t.oracle-tracker.example'
                              '\\\n{Q}")}}</style><p>x</p>',
    "css_newlines": '<style>p{{background:url(\n{U}\n)}}</style><p>x</p>',
    "css_unclosed_at_eof": '<p>x</p><style>p{{background:url({U})',
    "css_in_body": '<p>x</p><style>p{{background:url({U})}}</style>',
    "css_style_media_attr": '<style media="screen">p{{background:url({U})}}</style><p>x</p>',
    "css_list_style": '<style>li{{list-style-image:url({U})}}</style><ul><li>x</li></ul>',
    "css_cursor": '<style>p{{cursor:url({U}),auto}}</style><p>x</p>',
    "css_mask": '<style>p{{mask-image:url({U})}}</style><p>x</p>',
    "css_border_image": '<style>p{{border:9px solid;border-image-source:url({U})}}</style>'
                        '<p>x</p>',
    "css_image_set_string": '<style>p{{background-image:image-set("{U}" 1x)}}</style><p>x</p>',
    "css_attr_selector_url": '<style>p[title="a}}"]{{background:url({U})}}</style>'
                             '<p title="a}}">x</p>',
    # the scanner read as the CSS tokenizer does (each ' or " after a token the scanner
    # once misread starts a string that ran over the real url() into the closing comment)
    "css_bad_url_escape": "<p>x</p><style>p{{color:url(a\"\\)'x) }} p{{background:url({U})}}"
                          " /*'*/</style>",
    "css_bad_url_paren": "<style>p{{x:url(a(\\)'b); }} p{{background:url({U})}} /*'*/</style>"
                         "<p>x</p>",
    "css_bad_url_string_desync": "<style>p{{x:url(a\"b\\)c'); }} p{{background:url({U})}} "
                                 "/*'*/</style><p>x</p>",
    "css_image_set_bad_url": "<style>p{{background-image:image-set(url(a\"\\)'x) 1x); }} "
                             "p{{background:url({U})}} /*'*/</style><p>x</p>",
    "css_bad_url_in_font_face": "<style>@font-face{{font-family:q;src:url(a\"\\)'b)}} "
                                "p{{background:url({U})}} /*'*/</style><p>x</p>",
    "css_font_face_brace_in_url": "<p>x</p><style>@font-face{{font-family:q;src:url(a}}'b)}} "
                                  "p{{background:url({U})}} /*'*/</style>",
    "css_nul_in_url": "<p>x</p><style>p{{background:url({U}\x00)}}</style>",
    "style_nul_in_url": '<p style="background:url({U}\x00)">x</p>',
    "style_nul_in_url_mid": '<p style="background:url(https://{H}/p/\x00/style_nul_in_url_mid.gif'
                            '?e=reader%40example.org)">x</p>',
    "css_import_tail_bad_url": "<style>@import \"x.css\" url(a;'b); p{{background:url({U})}} "
                               "/*'*/</style><p>x</p>",
    "css_import_tail_escaped_quote": "<style>@import \"x.css\" '\\';' ; p{{background:url({U})}}"
                                     " /*'*/</style><p>x</p>",
    "css_import_escaped_url_data": "<style>@import u\\72l(data:text/css,p%7Bbackground:url%28"
                                   "{U}%29%7D);</style><p>x</p>",
    "css_font_face_prelude_string": "<style>@font-face '{{' ; p{{background:url({U})}} /*'*/"
                                    "</style><p>x</p>",
    "css_hash_url_in_is": "<style>:is(#url(a\")\"), p){{background:url({U})}}</style><p>x</p>",
    "css_hash_escaped_url_in_is": "<style>:is(#\\75rl(a\")\"), p){{background:url({U})}}"
                                  "</style><p>x</p>",
    "css_at_url_in_is": "<style>:is(@url(a\")\"), p){{background:url({U})}}</style><p>x</p>",
    "css_nul_name_url_in_is": "<style>:is(\x00url(a\")\"), p){{background:url({U})}}</style>"
                              "<p>x</p>",
    "css_cdo_url_then_comment": "<style>q{{x:<!--url(/*)}} p{{background:url({U})}} /**/"
                                "</style><p>x</p>",
    "css_cdo_escaped_url_then_comment": "<style>q{{x:<!--\\75rl(/*)}} p{{background:url({U})}}"
                                        " /**/</style><p>x</p>",
    "css_string_hex_escape_newline": "<style>p{{content:\"\\41\n\"; background:url({U})}} "
                                     "/*\"*/</style><p>x</p>",
    "css_url_hex_escape_crlf": "<style>p{{background:url({U}\\41\r\nb)}}</style><p>x</p>",
    "css_url_backslash_at_end": "<style>p{{background:url({U}\\</style><p>x</p>",
    # SVG and MathML (the precise path leaves them to the fallback)
    "svg_image_href": '<svg width="10" height="10"><image href="{U}" width="10" height="10"/>'
                      '</svg>',
    "svg_image_xlink": '<svg width="10" height="10"><image xlink:href="{U}" width="10" '
                       'height="10"/></svg>',
    "svg_feimage": '<svg width="10" height="10"><filter id="f"><feImage href="{U}"/></filter>'
                   '<rect width="10" height="10" filter="url(#f)"/></svg>',
    "svg_use": '<svg width="10" height="10"><use href="{U}#a"/></svg>',
    "svg_style": '<svg><style>@import url({U});</style></svg>',
    "svg_style_entity": '<svg><style>@import url(&quot;{U}&quot;);</style></svg>',
    # a removal must not join the text around it into markup (a "<" before it)
    "splice_lt_joins_img": '<<img src="{U}">img src="{U}">',
    "splice_lt_alt_text": '<<img alt="img src={U} " src="{U}" width="600" height="300">>',
    "splice_lt_input": '<<input type=image src="{U}">img src="{U}">',
    "splice_lt_link": '<<link rel=stylesheet href="{U}">img src="{U}">',
    "splice_lt_meta": '<<meta http-equiv=refresh content="0;url={U}">img src="{U}">',
    "splice_lt_opens_comment": ('<<img src="{U}">!-- <style> --> /* <img src="{U}"> */ '
                                '</style><p>x</p>'),
    "splice_css_import_joins_url": ('<img src="{U}" width=1 height=1>'
                                    "<style>p{background:u@import'{U}';rl({U})}</style>"),
    "splice_css_import_joins_at": ('<img src="{U}" width=1 height=1>'
                                   "<style>@@import '{U}';import '{U}';</style>"),
    "splice_css_import_ends_style": ('<img src="{U}" width=1 height=1>'
                                     "<style><@import '{U}';/style><img src=\"{U}\"></style>"),
    # an attribute is emptied in place, never removed: no join, the first one still wins
    "splice_attr_joins_tag_name": ('<im background="{U}"g src="{U}">'
                                   '<img src="{U}" width=1 height=1>'),
    "splice_attr_joins_attr_name": ('<img sr background="{U}"c="{U}">'
                                    '<img src="{U}" width=1 height=1>'),
    "splice_name_url_joins_attr_name": ('<img sr https://{H}/a/b="x"c="{U}">'
                                        '<img src="{U}" width=1 height=1>'),
    "splice_attr_joins_poster": ('<video src="data:," poste background="{U}"r="{U}"></video>'
                                 '<img src="{U}" width=1 height=1>'),
    "splice_attr_makes_iframe": ('<ifram background="{U}"e src="{U}"></iframe>'
                                 '<img src="{U}" width=1 height=1>'),
    "splice_attr_ends_raw_text": ('<p background="{U}">x</p>'
                                  '<style background="{U}"x><img src="{U}"></style>'
                                  '<img src="{U}" width=1 height=1>'),
    "dup_attr_iframe_src": '<iframe src="{U}" src="{U}"></iframe>',
    "dup_attr_table_background": ('<table background="{U}" background="{U}"><tr><td>x</td>'
                                  '</tr></table>'),
    "dup_attr_video_poster": '<video src="data:," poster="{U}" poster="{U}"></video>',
    "srcset_unquoted_emptied": '<img srcset={U} https:{H}{Q}>',
    "splice_css_import_ends_style_tag": ("<style>p{color:red}</style@import '{U}';>"
                                         '<img src="{U}"></style><img src="{U}" width=1 height=1>'),
    # Chromium's preload scanner reads a later duplicate (the tree builder the first one)
    "preload_dup_poster_empty_first": '<video poster="" poster="{U}"></video>',
    "preload_dup_link_href_empty_first": '<link rel="stylesheet" href="" href="{U}">',
    "preload_dup_link_rel": '<link rel="canonical" rel="stylesheet" href="{U}">',
    "preload_dup_input_src_blank_first": '<input type="image" src=" " src="{U}">',
    "preload_dup_input_type": '<input type="text" type="image" src="{U}">',
    "preload_dup_link_as_image_href": '<link rel="preload" as="image" href="data:," href="{U}">',
    "preload_dup_source_srcset": '<picture><source srcset="" srcset="{U}"><img alt="x"></picture>',
    "preload_dup_source_srcset_both": ('<picture><source srcset="{U}" srcset="{U}">'
                                       '<img alt="x"></picture>'),
    # ... and fetches an @import's URL with its CSS escapes not decoded
    "preload_css_import_raw_backslashes": '<style>@import "\\\\{H}{Q}";</style>',
    "preload_css_import_raw_slash_escape": '<style>@import url(/\\{H}{Q});</style><p>x</p>',
    # a removal inside a conditional comment must not make the browser's comment end
    "splice_ends_conditional_comment": ('<img src="{U}" width=1 height=1><!--[if mso]>--'
                                        '<img src="{U}">><base href="https://{H}/p/">'
                                        '<img src="x.gif"><![endif]--><p>x</p>'),
    "splice_ends_conditional_comment_bang": ('<img src="{U}" width=1 height=1><!--[if mso]>--!'
                                             '<img src="{U}">><base href="https://{H}/p/">'
                                             '<img src="x.gif"><![endif]--><p>x</p>'),
    "splice_ends_conditional_comment_dash": ('<img src="{U}" width=1 height=1><!--[if mso]>-'
                                             '<img src="{U}">-><base href="https://{H}/p/">'
                                             '<img src="x.gif"><![endif]--><p>x</p>'),
    # Chromium's CSS preload scanner reads no strings: an @import inside @charset's
    "preload_css_import_in_charset_string": '<style>@charset "x;@import \'{U}\';";</style>',
    "preload_css_import_in_charset_unterminated": ('<style>@charset "x;@import url({U});\n'
                                                   '</style><p>x</p>'),
    "preload_css_import_after_comment_quote": ('<style>/*"*/@charset "a;@import url({U});b";'
                                               'p{}</style>'),
    "splice_alt_text_ends_conditional_comment": ('<img src="{U}" width=1 height=1>'
                                                 '<!--[if mso]><img src="{U}" alt="x--">>'
                                                 '<base href="https://{H}/p/"><img src="x.gif">'
                                                 '<![endif]--><p>x</p>'),
    # a removal changes where the preload scanner stops: every "@import " is read
    "preload_css_after_removal_slash": ('<img src="{U}" width=1 height=1><style>/@import '
                                        'url({U});@charset "x;@import url({U});";</style>'),
    "preload_css_after_removal_at": ('<img src="{U}" width=1 height=1><style>@@import '
                                     'url({U});@charset "x;@import url({U});";</style>'),
    "preload_css_after_removal_layer": ('<img src="{U}" width=1 height=1><style>@layer@import '
                                        'url({U});@charset "x;@import url({U});";</style>'),
    # a fragment alone is relative: against a remote <base> it loads the base
    "base_fragment_img": '<base href="{U}"><img src="#a">',
    "base_fragment_srcset": '<base href="{U}"><img srcset="#a 1x">',
    "base_fragment_background": ('<base href="{U}"><table background="#a"><tr><td>x</td>'
                                 '</tr></table>'),
    "base_fragment_style": '<base href="{U}"><p style="background:url(#a)">x</p>',
    "base_fragment_link": '<base href="{U}"><link rel=stylesheet href="#a">',
    "base_fragment_entity": '<base href="{U}"><img src="&#35;a">',
    # the at-keyword split by what an SVG <style> leaves out of its text (the fallback)
    "svg_style_at_entity": '<svg><style>@&#105;mport "{U}";</style></svg><p>x</p>',
    "svg_style_at_hex_entity": '<svg><style>@&#x69;mport "{U}";</style></svg><p>x</p>',
    "svg_style_at_both_entities": '<svg><style>&#64;&#105;mport "{U}";</style></svg><p>x</p>',
    "svg_style_at_bsol": '<svg><style>@&bsol;69mport "{U}";</style></svg><p>x</p>',
    "svg_style_at_cdata": '<svg><style>@imp<![CDATA[ort "{U}";]]></style></svg><p>x</p>',
    "svg_style_at_cdata_all": '<svg><style>@<![CDATA[import "{U}";]]></style></svg><p>x</p>',
    "svg_style_at_cdata_at": '<svg><style><![CDATA[@]]>import "{U}";</style></svg><p>x</p>',
    "svg_style_at_comment": '<svg><style>@imp<!---->ort "{U}";</style></svg><p>x</p>',
    "svg_style_at_element": '<svg><style>@imp<g/>ort "{U}";</style></svg><p>x</p>',
    "svg_style_at_pi": '<svg><style>@imp<?x?>ort "{U}";</style></svg><p>x</p>',
    "svg_style_at_after_charset": ('<svg><style>@charset "utf-8";@imp<!---->ort "{U}";'
                                   '</style></svg><p>x</p>'),
    "svg_foreignobject": '<svg><foreignObject width="10" height="10"><img src="{U}">'
                         '</foreignObject></svg>',
    "math_img": '<math><mtext><img src="{U}"></mtext></math>',
    "svg_breakout": '<svg><p><img src="{U}"></p></svg>',
    # parser contexts
    "noscript": '<noscript><img src="{U}"></noscript>',
    "noscript_in_head": '<head><noscript><link rel=stylesheet href="{U}"></noscript></head>',
    "noscript_style": '<noscript><p style="background:url({U})">x</p></noscript>',
    # with JavaScript on, <noscript> is raw text up to "</noscript>"; off, it is markup
    "noscript_attr_breakout": '<noscript><p title="</noscript><img src={U}>"></p></noscript>',
    "noscript_style_breakout": '<noscript><style></noscript><img src="{U}"></style></noscript>',
    "noscript_comment_breakout": '<noscript><!--</noscript><img src="{U}">--></noscript>',
    "noscript_textarea_breakout": '<noscript><textarea></noscript><img src="{U}"></textarea>'
                                  '</noscript>',
    "textarea_breakout": '<textarea>x</textarea ><img src="{U}">',
    "title_breakout": '<title>x</title/><img src="{U}">',
    "xmp_breakout": '<xmp>x</xmp\t><img src="{U}">',
    "style_close_variant": '<style>p{{}}</style\n><img src="{U}">',
    "script_close_variant": '<script>x</SCRIPT ><img src="{U}">',
    "comment_abrupt": '<!--><img src="{U}">',
    "comment_abrupt_dash": '<!---><img src="{U}">',
    "comment_bang_close": '<!-- x --!><img src="{U}">',
    "comment_dashes": '<!-- a -- b ---><img src="{U}">',
    "cdata_bogus": '<![CDATA[ x ><img src="{U}"> ]]>',
    "bogus_pi": '<? x ><img src="{U}"> ?>',
    "bogus_end_tag": '</ x><img src="{U}">',
    "bogus_doctype": '<!DOCTYPE x [ <!ENTITY a "b"> ]><img src="{U}">',
    "conditional_downlevel_revealed": '<![if !mso]><img src="{U}"><![endif]>',
    "conditional_not_mso": '<!--[if !mso]><!--><img src="{U}"><!--<![endif]-->',
    "conditional_not_mso_spaced": '<!--[if !mso]><!-- --><img src="{U}"><!--<![endif]-->',
    # A browser ends a conditional comment at its first "-->"; Outlook's reading is markup
    # there, and must not read past that point inside a construct.
    "conditional_value_breakout": '<!--[if mso]><b title="--><img src={U}>"></b><![endif]-->',
    "conditional_single_quote_breakout": "<!--[if mso]><b title='--><img src={U}>'><![endif]-->",
    "conditional_style_breakout": '<!--[if mso]><style>a{}--><img src={U}></style><![endif]-->',
    "conditional_style_spans_endif": '<!--[if mso]><style><![endif]--><p>x</p><img src="{U}">'
                                     '<!--[if mso]></style><![endif]-->',
    "conditional_title_breakout": '<!--[if mso]><title>--><img src={U}></title><![endif]-->',
    "conditional_textarea_breakout": '<!--[if mso]><textarea>--><img src={U}></textarea>'
                                     '<![endif]-->',
    "conditional_endif_in_value": '<!--[if mso]><b title="<![endif]--><img src={U}>">',
    "conditional_bang_end": '<!--[if mso]><b title="--!><img src={U}>"><![endif]-->',
    "conditional_nested_breakout": '<!--[if mso]><!--[if gte mso 9]><b title="--><img src={U}>">'
                                   '<![endif]--><![endif]-->',
    # The script data double-escaped state: "<!--<script>" makes the next "</script" text.
    "script_double_escaped": '<script><!--<script></script><b title="</script><img src={U}>">',
    "endif_opens_comment": '<!--<![endif]><p title="--><img src={U}>">x</p>',
    "endif_ws_opens_comment": '<!--<![endif] ><p title="--><img src={U}>">x</p>',
    "select_img": '<select><option>x</option></select><img src="{U}">',
    "template_breakout": '<template><p></template><img src="{U}">',
    "iframe_text_breakout": '<iframe>x</iframe ><img src="{U}">',
    "noembed_breakout": '<noembed>x</noembed ><img src="{U}">',
    "noframes_breakout": '<noframes>x</noframes ><img src="{U}">',
    "plaintext_after": '<img src="{U}"><plaintext><img src="data:,">',
    "nul_in_tag": '<img src="{U}"\x00>',
    "nul_in_value": '<img src="{U}\x00">',
    "attr_no_space": '<img alt="x"src="{U}">',
    "many_attrs": '<img ' + " ".join(f"a{i}=1" for i in range(300)) + ' src="{U}">',
    "long_value_before": '<img alt="' + "x" * 20000 + '" src="{U}">',
    "unclosed_comment_after": '<img src="{U}"><!-- never closed',
    "unclosed_tag_after": '<img src="{U}"><p title="unclosed',
    "table_foster": '<table><img src="{U}"><tr><td>x</td></tr></table>',
    "form_input_image": '<form><input type="image" src="{U}"></form>',
    "button_bg": '<button style="background:url({U})">x</button>',
    "details_closed_img": '<details><summary>s</summary><img src="{U}"></details>',
    "marquee_bg": '<marquee style="background:url({U})">x</marquee>',
    "object_param": '<object data="{U}"><param name="x" value="y"></object>',
    "img_in_a": '<a href="https://shop.example/"><img src="{U}"></a>',
    # CSS URL request modifiers (Values 4): url("x" modifier()) loads x (session 15)
    "url_modifier_style": '<p style="background:url(\'{U}\' cross-origin(anonymous))">x</p>',
    "url_modifier_import": '<style>@import url("{U}" referrer-policy(no-referrer));</style>x',
    "url_modifier_font": '<style>@font-face{font-family:z;src:url("{U}" integrity("sha256-x"))}'
                         'p{font-family:z}</style><p>x</p>',
    "url_modifier_var": '<p style="--m:cross-origin(anonymous);background:url(\'{U}\' '
                        'var(--m))">x</p>',
    # a string substituted into image-set() is a URL wherever it was written
    "image_set_var": '<p style="--x:\'{U}\';background-image:image-set(var(--x))">x</p>',
    "image_set_var_fallback": '<p style="background-image:image-set(var(--n,\'{U}\'))">x</p>',
    "image_set_property": '<style>@property --x{syntax:"*";inherits:true;initial-value:"{U}"}'
                          'p{background-image:image-set(var(--x))}</style><p>x</p>',
    "image_set_function": '<style>@function --f(){result:"{U}"}'
                          'p{background-image:image-set(--f())}</style><p>x</p>',
    "image_set_if": '<p style="background-image:image-set(if(media(min-width:1px):\'{U}\'))">'
                    'x</p>',
    "image_set_env": '<p style="background-image:image-set(env(nope,\'{U}\'))">x</p>',
    # a URL the URL parser trims to nothing is the base URL (only "" loads nothing)
    "blank_url_base": '<base href="{U}"><p style="background:url(\' \')">x</p>',
    "blank_image_set_base": '<base href="{U}"><p style="background:image-set(\' \' 1x)">x'
                            '</p>',
    "escaped_tab_url_base": '<base href="{U}"><style>p{background:url(\'\\9\')}</style>'
                            '<p>x</p>',
    "control_src_base": '<base href="{U}"><img src="\x1c" width="1" height="1">',
    "nbsp_url_base": '<base href="https://{H}/p/r-reader%40example.org/">'
                     '<p style="background:url(\'\\a0\')">x</p>',
}

# -- generated: loader contexts x URL spellings a browser still reads as the tracker -----------

#: {V}: the URL as spelled.  Attribute contexts decode entities; CSS ones escapes too.
_ATTR_CONTEXTS = {
    "img": '<img src="{V}">',
    "srcset": '<img srcset="{V} 1x">',
    "input": '<input type="image" src="{V}">',
    "body_bg": '<body background="{V}">x</body>',
    "td_bg": '<table><tr><td background="{V}">x</td></tr></table>',
    "poster": '<video poster="{V}"></video>',
    "link": '<link rel="stylesheet" href="{V}">',
    "iframe": '<iframe src="{V}"></iframe>',
    "embed": '<embed src="{V}" type="image/gif">',
    "style_attr": '<p style="background:url(\'{V}\')">x</p>',
}
_CSS_CONTEXTS = {
    "css_bg": "<style>p{{background:url('{V}')}}</style><p>x</p>",
    "css_import": "<style>@import '{V}';</style>",
    "css_font": "<style>@font-face{{font-family:z;src:url('{V}')}}p{{font-family:z}}</style>"
                "<p>x</p>",
    "style_attr_css": '<p style="background:url(\'{V}\')">x</p>',
}
# Session 26: a hex escape takes one blank as its end; what a copy inserts to keep tokens
# apart must be two (precise path: a removed @import; fallback: before every "(").
SNIPPETS.update({
    "css_escape_import_joins_url": '<img src="{U}" width="1" height="1"><style>p{{background:'
                                   'ur\\6c@import \'{U}\';("{U}")}}</style><p>Offers</p>',
    "css_escape_import_joins_import": '<img src="{U}" width="1" height="1"><style>@im\\70'
                                      '@import \'{U}\';ort "{U}";</style><p>Offers</p>',
    "css_escape_fallback_paren": '<svg width="1" height="1"></svg><p title="<title>"><b style='
                                 '"background:ur\\6c&#40;&quot;{U}&quot;)">Offers</b>'
                                 "</title></p>",
})
#: (name, spelling of "https://" + host + path): each still the tracker to a browser.
_ATTR_SPELLINGS = {
    "entity_scheme": "&#x68;&#116;tps&colon;//{HQ}",
    "tab_in_scheme": "ht\ttps://{HQ}",
    "newline_in_host": "https://t.oracle-tracker.\nexample{Q}",
    "backslashes": "\\\\{HQ}",
    "no_slashes": "https:{HQ}",
    "mixed_case": "HtTpS://{HQ}",
    "leading_space": " \f https://{HQ}",
    "entity_slashes": "https:&sol;&#47;{HQ}",
}
_CSS_SPELLINGS = {
    "css_escape_scheme": "\\68 ttps://{HQ}",
    "css_escape_slashes": "https:\\2f\\2f{HQ}",
    "css_escaped_newline": "https://{H}\\\n{Q}",
    "protocol_relative": "//{HQ}",
    "css_escape_host": "https://\\74 .oracle-tracker.example{Q}",
}


def _generated() -> dict[str, str]:
    out: dict[str, str] = {}
    for contexts, spellings in ((_ATTR_CONTEXTS, _ATTR_SPELLINGS),
                                (_CSS_CONTEXTS, _CSS_SPELLINGS)):
        for ctx, markup in contexts.items():
            for spelling, url in spellings.items():
                out[f"gen_{ctx}_{spelling}"] = markup.replace("{V}", url.replace(
                    "{HQ}", "{H}{Q}"))
    return out


SNIPPETS.update(_generated())

#: Snippets whose original Chromium does not load from (no control): kept out of the
#: corpus, each with the reason.  A case here proves nothing either way.
NO_CONTROL: dict[str, str] = {
    "css_comment_in_url_fn": "url/**/( is a function token 'url' after a comment: invalid",
    "noscript_attr_breakout": "JavaScript off: the </noscript> is inside a title (see _js)",
    "noscript_style_breakout": "JavaScript off: the <img> is style text (see _js)",
    "noscript_comment_breakout": "JavaScript off: the <img> is in a comment (see _js)",
    "noscript_textarea_breakout": "JavaScript off: the <img> is textarea text (see _js)",
    "srcdoc_noscript_title": "JavaScript off: the </noscript> is inside a title (see _js)",
    "gen_srcset_tab_in_scheme": "srcset splits candidates at whitespace",
    "gen_srcset_newline_in_host": "srcset splits candidates at whitespace",
    "gen_style_attr_newline_in_host": "a raw newline ends a CSS string: invalid",
    "gen_style_attr_backslashes": "a backslash in a CSS string is an escape: //t... is not it",
    "gen_style_attr_leading_space": "the form feed stays in the CSS string: not a URL start",
}

#: Also rendered with JavaScript on (noscript is then raw text, other paths change).
WITH_SCRIPT = ("noscript_attr_breakout", "noscript_style_breakout", "noscript_comment_breakout",
               "noscript_textarea_breakout", "img_lazy", "iframe_lazy", "meta_refresh",
               "css_block", "style_nul_in_url", "srcdoc_noscript_title")

#: Snippets also sent base64- and quoted-printable-encoded.
ENCODED = ("img", "style_bg", "css_import", "body_background", "link_stylesheet",
           "svg_image_href", "noscript", "meta_refresh", "base_relative_img", "picture")


def snippet(name: str, case: str | None = None) -> str:
    case = case or name
    url = tracker(case)
    host, _, tail = url.removeprefix("https://").partition("/")
    svg = _SVG_IMG.replace("{U}", url)
    return (SNIPPETS[name].replace("{U}", url).replace("{H}", host).replace("{Q}", "/" + tail)
            .replace("{B64IMG}", base64.b64encode(f'<img src="{url}">'.encode()).decode())
            .replace("{B64CSS}", base64.b64encode(
                f"p{{background:url({url})}}".encode()).decode())
            .replace("{SVGQ}", svg.replace("'", "%27").replace("<", "%3C").replace(">", "%3E")
                     .replace("#", "%23").replace('"', "%22"))
            .replace("{{", "{").replace("}}", "}"))


# -- MIME-level cases --------------------------------------------------------------------------

def _page(case: str) -> str:
    return (f'<html><body><p>Offers</p><img src="{tracker(case)}" width="1" height="1">'
            "</body></html>")


def mime_cases() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    b64 = base64.encodebytes(_page("mime_base64_alt").encode()).decode()
    out["mime_base64_alt"] = crlf(
        HEAD + 'Content-Type: multipart/alternative; boundary="a"\n\n--a\n'
        "Content-Type: text/plain\n\nOffers\n--a\nContent-Type: text/html; charset=utf-8\n"
        "Content-Transfer-Encoding: base64\n\n" + b64 + "--a--\n")
    out["mime_html_first_alt"] = crlf(
        HEAD + 'Content-Type: multipart/alternative; boundary="a"\n\n--a\n'
        "Content-Type: text/html; charset=utf-8\n\n" + _page("mime_html_first_alt")
        + "\n--a\nContent-Type: text/plain\n\nOffers\n--a--\n")
    out["mime_two_html_parts"] = crlf(
        HEAD + 'Content-Type: multipart/mixed; boundary="m"\n\n--m\n'
        "Content-Type: text/html; charset=utf-8\n\n<p>first</p>\n--m\n"
        "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        + quopri.encodestring(_page("mime_two_html_parts").encode()).decode() + "\n--m--\n")
    inner = (f"From: a@b.example\nSubject: fwd\nMIME-Version: 1.0\n"
             f"Content-Type: text/html; charset=utf-8\n\n{_page('mime_rfc822')}\n")
    out["mime_rfc822"] = crlf(
        HEAD + 'Content-Type: multipart/mixed; boundary="m"\n\n--m\nContent-Type: text/plain\n\n'
        "see below\n--m\nContent-Type: message/rfc822\n\n" + inner + "--m--\n")
    inner = (f"From: a@b.example\nSubject: fwd\nMIME-Version: 1.0\n"
             f"Content-Type: text/html; charset=utf-8\n\n{_page('mime_rfc822_base64')}\n")
    out["mime_rfc822_base64"] = crlf(
        HEAD + 'Content-Type: multipart/mixed; boundary="m"\n\n--m\nContent-Type: text/plain\n\n'
        "see below\n--m\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(crlf(inner)).decode() + "--m--\n")
    inner_alt = ("From: a@b.example\nSubject: fwd\nMIME-Version: 1.0\n"
                 'Content-Type: multipart/alternative; boundary="i"\n\n--i\n'
                 "Content-Type: text/plain\n\nx\n--i\nContent-Type: text/html\n"
                 "Content-Transfer-Encoding: base64\n\n"
                 + base64.encodebytes(_page("mime_rfc822_nested").encode()).decode()
                 + "--i--\n")
    out["mime_rfc822_nested"] = crlf(
        HEAD + 'Content-Type: multipart/mixed; boundary="m"\n\n--m\n'
        "Content-Type: message/rfc822\nContent-Transfer-Encoding: quoted-printable\n\n"
        + quopri.encodestring(crlf(inner_alt)).decode() + "\n--m--\n")
    out["mime_related"] = crlf(
        HEAD + 'Content-Type: multipart/related; boundary="r"\n\n--r\n'
        "Content-Type: text/html; charset=iso-8859-1\nContent-Transfer-Encoding: "
        "quoted-printable\n\n" + quopri.encodestring(_page("mime_related").encode()).decode()
        + "\n--r\nContent-Type: image/gif\nContent-ID: <c1>\nContent-Transfer-Encoding: base64"
        "\n\nR0lGODlhAQABAAAAACw=\n--r--\n")
    out["mime_qp_soft_breaks"] = crlf(
        HEAD + "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: "
        "quoted-printable\n\n" + "".join(
            c + "=\n" for c in f'<img src="{tracker("mime_qp_soft_breaks")}">') + "\n")
    out["mime_qp_encoded_chars"] = crlf(
        HEAD + "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: "
        "quoted-printable\n\n" + "".join(
            f"={b:02X}" for b in f'<img src="{tracker("mime_qp_encoded_chars")}">'.encode())
        + "\n")
    out["mime_base64_odd_lines"] = crlf(
        HEAD + "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        + "\n".join(base64.b64encode(_page("mime_base64_odd_lines").encode()).decode()[i:i + 7]
                    for i in range(0, 400, 7)) + "\n")
    # charset tricks: the part's label against what the bytes say
    page = f'<img src="{tracker("charset_utf16_bom_labelled_utf8")}">'
    out["charset_utf16_bom_labelled_utf8"] = html_message(
        b"\xff\xfe" + page.encode("utf-16-le"), cte="base64")
    page = f'<img src="{tracker("charset_utf8_bom_labelled_latin1")}">'
    out["charset_utf8_bom_labelled_latin1"] = html_message(
        b"\xef\xbb\xbf" + page.encode(), "text/html; charset=iso-8859-1")
    page = f'<meta charset="utf-16"><img src="{tracker("charset_meta_utf16_no_label")}">'
    out["charset_meta_utf16_no_label"] = html_message(page.encode(), "text/html")
    page = f'<img src="{tracker("charset_utf16_labelled")}">'
    out["charset_utf16_labelled"] = html_message(
        page.encode("utf-16"), "text/html; charset=utf-16", cte="base64")
    page = f'<img src="{tracker("charset_utf16be_bom_no_label")}">'
    out["charset_utf16be_bom_no_label"] = html_message(
        b"\xfe\xff" + page.encode("utf-16-be"), "text/html", cte="base64")
    page = f'<img src="{tracker("charset_shift_jis")}" alt="\u3042">'
    out["charset_shift_jis"] = html_message(page.encode("shift_jis"),
                                            "text/html; charset=shift_jis")
    page = f'<img alt="\u3042" src="{tracker("charset_iso2022jp")}">'
    out["charset_iso2022jp"] = html_message(page.encode("iso2022_jp"),
                                            "text/html; charset=iso-2022-jp", cte="7bit")
    page = f'<p>\u00e9</p><img src="{tracker("charset_unknown_label")}">'
    out["charset_unknown_label"] = html_message(page.encode(), "text/html; charset=x-nonsense")
    out.update(_mime_reading_cases())
    out.update(_charset_reading_cases())
    out.update(_mime_split_cases())
    return out


def _mime_split_cases() -> dict[str, bytes]:
    """Structures Python's ``email`` splits otherwise than the parser (session 17's MIME
    attack): each renders its HTML part where the parser saw a preamble or an epilogue,
    also with an ``<svg>`` part that sends the copy to the fallback (``_fb``)."""
    svg = "--b\nContent-Type: text/html; charset=utf-8\n\n<svg><rect width='1'/></svg>\n"
    html = "Content-Type: text/html; charset=utf-8\n\n"
    shapes = {
        # a bare "boundary" is "" to Python's email: it splits at "--"
        "mime_bare_boundary": ('multipart/mixed; boundary; boundary="b"',
                               "--\n" + html + "{PAGE}\n----\n"
                               "--b\nContent-Type: text/plain\n\nhi\n{SVG}--b--\n"),
        # Python's email skips a close delimiter right after a delimiter and reads on
        "mime_close_after_delimiter": ('multipart/mixed; boundary="b"',
                                       "--b\nContent-Type: text/plain\n\nhi\n{SVG}"
                                       "--b\n--b--\n" + html + "{PAGE}\n--b--\n"),
        # and reads each block of a delivery status as a message of its own
        "mime_delivery_status_block": ('multipart/report; report-type=delivery-status; '
                                       'boundary="b"',
                                       "--b\nContent-Type: text/plain\n\nhi\n{SVG}"
                                       "--b\nContent-Type: message/delivery-status\n\n"
                                       "Reporting-MTA: dns; x.example\n\n"
                                       "Content-Type: text/html; charset=utf-8\n{PAGE}\n\n"
                                       "--b--\n"),
        # Python's email splits what the text before ";" calls a multipart (session 17's
        # second MIME attack): a subtype no token, or none at all
        "mime_multipart_comment_subtype": ("multipart/(x)mixed; boundary=b",
                                           "--b\n" + html + "{PAGE}\n{SVG}--b--\n"),
        "mime_multipart_no_subtype": ("multipart/; boundary=b",
                                      "--b\n" + html + "{PAGE}\n{SVG}--b--\n"),
    }
    out: dict[str, bytes] = {}
    for name, (ctype, body) in shapes.items():
        for case, extra in ((name, ""), (f"{name}_fb", svg)):
            out[case] = crlf(HEAD + f"Content-Type: {ctype}\n\n"
                             + body.replace("{SVG}", extra).replace("{PAGE}", _page(case)))
    return out


def _mime_reading_cases() -> dict[str, bytes]:
    """Messages Python's email (the harness's reader) reads otherwise than the parser did:
    any message/* is a message to it; base64 it cannot decode is shown raw; a boundary
    or charset written so that readers take it differently (those are held)."""
    out: dict[str, bytes] = {}
    pixel = '<img src="{}" width="1" height="1">'
    out["mime_message_news"] = crlf(
        HEAD + 'Content-Type: multipart/mixed; boundary="m"\n\n--m\nContent-Type: text/plain'
        "\n\nsee below\n--m\nContent-Type: message/news\n\nSubject: fwd\n"
        f"Content-Type: text/html\n\n<p>x</p>{pixel.format(tracker('mime_message_news'))}"
        "\n--m--\n")
    out["mime_top_message_partial"] = crlf(
        HEAD + "Content-Type: message/partial; id=1; number=1; total=1\n\n"
        "Content-Type: text/html\n\n<p>x</p>"
        + pixel.format(tracker("mime_top_message_partial")) + "\n")
    for pad in range(8):  # alphabet characters 1 more than a multiple of 4, no "=" in it
        url = f"https://{HOST}/p/mime_base64_shown_raw/{'x' * pad}reader%40example.org.gif"
        html = f"<style>body{{background:url({url})}}</style><p>Offers</p>"
        if sum(c.isascii() and (c.isalnum() or c in "+/") for c in html) % 4 == 1:
            break
    out["mime_base64_shown_raw"] = crlf(
        HEAD + "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64"
        "\n\n" + html + "\n")

    def swap(case: str, ctype: str, parser: str, python: str) -> bytes:
        return crlf(HEAD + f"Content-Type: {ctype}\n\n--{parser}\nContent-Type: text/plain\n\n"
                    f"--{python}\nContent-Type: text/html\n\n{pixel.format(tracker(case))}\n"
                    f"--{python}--\n--{parser}--\n")

    for case, ctype, parser, python in (
            ("boundary_2231_gap", "multipart/mixed; boundary*0=a; boundary*2=c", "a", "ac"),
            ("boundary_2231_section_100", "multipart/mixed; boundary*0=a; boundary*100=c",
             "a", "ac"),
            ("boundary_2231_tick_in_later_section",
             "multipart/mixed; boundary*0=\"x'y'z\"; boundary*1*=q", "x'y'zq", "zq"),
            ("boundary_unbalanced_quote", 'multipart/mixed; boundary="ab', "ab", '"ab'),
            ("boundary_quote_mid", 'multipart/mixed; boundary=a"b"c', "abc", 'a"b"c'),
            ("boundary_comment_after", "multipart/mixed; boundary=a (x)", "a", "a (x)")):
        out[f"mime_{case}"] = swap(f"mime_{case}", ctype, parser, python)
    for case, ctype in (("charset_2231_gap", "charset*0=utf; charset*2=-16le"),
                        ("charset_2231_tick", "charset*0=\"x'y'utf\"; charset*1*=-16le")):
        page = pixel.format(tracker(f"mime_{case}")).encode("utf-16-le")
        out[f"mime_{case}"] = html_message(page, f"text/html; {ctype}", cte="base64")
    out.update(_header_reading_cases(pixel))
    return out


def _header_reading_cases(pixel: str) -> dict[str, bytes]:
    """Header blocks, transfer encodings and boundaries Python's email reads otherwise than
    the parser does (held): a header block read on past a line the parser stops at, or
    ended at a "Name :" line; an encoding name it does not decode; a boundary it strips."""
    out: dict[str, bytes] = {}

    def b64(case: str) -> str:
        return base64.encodebytes(pixel.format(tracker(case)).encode()).decode()

    def raw(case: str) -> str:  # the alphabet count a multiple of 4: decodable as base64
        html = pixel.format(tracker(case))
        count = sum(c.isascii() and (c.isalnum() or c in "+/") for c in html)
        return html + "<p>" + "x" * (-(count + 3) % 4) + "</p>"  # (<p> and </p>: 1 + 2)

    out["mime_header_read_on"] = crlf(HEAD + ":x\nContent-Type: text/html\n"
                                      "Content-Transfer-Encoding: base64\n\n"
                                      + b64("mime_header_read_on"))
    out["mime_header_blank_before_colon"] = crlf(
        HEAD + "Content-Type: text/html\nX-A : 1\nContent-Transfer-Encoding: base64\n\n"
        + raw("mime_header_blank_before_colon") + "\n")
    out["mime_cte_trailing_space"] = crlf(
        HEAD + "Content-Type: text/html\nContent-Transfer-Encoding: base64 \n\n"
        + raw("mime_cte_trailing_space") + "\n")
    for case, written in (("mime_boundary_tab", '"b\t"'), ("mime_boundary_angle", '"<b>"')):
        out[case] = crlf(HEAD + f"Content-Type: multipart/mixed; boundary={written}\n\n"
                         "--b\nContent-Type: text/plain\n\nhello\n--b\n"
                         "Content-Type: text/html\nContent-Transfer-Encoding: base64\n\n"
                         + b64(case) + "\n--b--\n")
    return out


#: A CSS string that a trail byte "\\" (Shift_JIS 0x95 0x5C, Big5 0xB3 0x5C) closes for a
#: reader of the double-byte charset and escapes for an ASCII reader: {T} is the trail pair.
_TRAIL_CSS = '<p>x</p><style>p{{font-family:"{T}"; background:url({U})}} /*"*/</style>'
_TRAIL_CSS_2 = ('<meta charset="windows-1252"><p>x</p><style>p{{font-family:"{T}"; x:"; '
                'background:url({U})}} /*"*/</style>')


def _charset_reading_cases() -> dict[str, bytes]:
    """Text that clients read in more than one way (labels browsers do not know, a
    ``<meta>`` charset, lying labels, ISO-2022-JP escapes only some decoders know): the
    refused copy is held, or neutralised for every reading."""
    def page(case: str, markup: str, trail: str = "\x95\\") -> bytes:
        return markup.replace("{T}", trail).replace("{U}", tracker(case)).encode(
            "latin-1").replace(b"{{", b"{").replace(b"}}", b"}")

    out: dict[str, bytes] = {}
    # a <meta> charset naming a charset with ASCII-range trail bytes, no usable label
    for case, ctype, meta, trail in (
            ("charset_sjis_meta_unlabelled", "text/html", "shift_jis", "\x95\\"),
            ("charset_sjis_meta_unknown_label", "text/html; charset=x-klingon", "shift_jis",
             "\x95\\"),
            ("charset_big5_meta_unlabelled", "text/html", "big5", "\xb3\\")):
        out[case] = html_message(f'<meta charset="{meta}">'.encode() + page(
            case, _TRAIL_CSS, trail), ctype)
    case = "charset_sjis_meta_style_attr"
    out[case] = html_message(page(case, '<meta charset="shift_jis"><p style=\'font-family:'
                                  '"{T}"; background-image:url({U})\'>x</p>'), "text/html")
    # a Shift_JIS label on bytes that are not all Shift_JIS: browsers still read it so
    case = "charset_sjis_lying_label"
    out[case] = html_message(page(case, _TRAIL_CSS) + b"<p>\xc2\x81</p>",
                             "text/html; charset=shift_jis")
    # labels only mail software knows: browsers read windows-1252 (here: the <meta>)
    for label in ("cp932", "ms-kanji", "x-mac-japanese", "cp950", "big5hkscs", "cp936",
                  "euc-cn"):
        case = "charset_mail_label_" + label.replace("-", "_")
        out[case] = html_message(page(case, _TRAIL_CSS_2), f"text/html; charset={label}")
    for label in ("iso-2022-jp-2", "iso2022jp"):
        case = "charset_mail_label_" + label.replace("-", "_")
        out[case] = html_message(page(case, '<p>x</p>\x1b$B<img src="{U}">\x1b(B<p>y</p>'),
                                 f"text/html; charset={label}", cte="7bit")
    for label in ("utf-16-le", "x-utf-16le", "u16"):
        case = "charset_mail_label_" + label.replace("-", "_")
        out[case] = html_message(page(case, '<p>x\x00</p><img src="{U}">'),
                                 f"text/html; charset={label}", cte="base64")
    # ISO-2022-JP escapes browsers do not know (an error, then ASCII) and JIS-Roman
    for case, markup in (
            ("charset_2022jp_gb2312", '<p>x</p>\x1b$A<img src="{U}">\x1b(B<p>y</p>'),
            ("charset_2022jp_ksc", '<p>x</p>\x1b$(C<img src="{U}">\x1b(B<p>y</p>'),
            ("charset_2022jp_jisx0212", '<p>x</p>\x1b$(D<img src="{U}">\x1b(B<p>y</p>'),
            ("charset_2022jp_jisx0213", '<p>x</p>\x1b$(Q<img src="{U}">\x1b(B<p>y</p>'),
            ("charset_2022jp_single_shift", '<p>x</p>\x1bN<img src="{U}">\x1b(B<p>y</p>'),
            ("charset_2022jp_roman_css", '<p>x</p><style>\x1b(Jp{{font-family:"a\\"; '
                                         'background:url({U})}} /*"*/\x1b(B</style>'),
            ("charset_2022jp_roman_style_attr", '<p style=\'\x1b(Jfont-family:"a\\"; '
                                                'background-image:url({U})\x1b(B\'>x</p>')):
        out[case] = html_message(page(case, markup), "text/html; charset=iso-2022-jp",
                                 cte="7bit")
    # a shift that outputs nothing joins the letters around it: "s ESC ( B rc" is "src"
    for case, markup, cte in (
            ("charset_2022jp_join_src", '<img s\x1b(Brc="{U}">', "7bit"),
            ("charset_2022jp_join_roman", '<img s\x1b(Jrc="{U}">', "7bit"),
            ("charset_2022jp_join_b64", '<img s\x1b(Brc="{U}">', "base64"),
            ("charset_2022jp_join_svg", '<s\x1b(Bvg><style>@&#105;mport "{U}";</style></svg>'
                                        "<p>x</p>", "7bit"),
            ("charset_2022jp_join_fallback", '<svg></svg><img s\x1b(Brc="{U}">', "7bit"),
            ("charset_2022jp_join_import", '<style>@imp\x1b(Bort "{U}";</style><p>x</p>', "7bit"),
            ("charset_2022jp_join_link", '<link rel=stylesheet hr\x1b(Bef="{U}">', "7bit"),
            ("charset_2022jp_join_url", '<p style="background:ur\x1b(Bl({U})">x</p>', "7bit")):
        out[case] = html_message(page(case, markup), "text/html; charset=iso-2022-jp", cte=cte)
    out["charset_2022jp_join_meta"] = html_message(  # unlabelled: Chromium follows the <meta>
        page("charset_2022jp_join_meta", '<meta charset="iso-2022-jp"><img s\x1b(Brc="{U}">'),
        "text/html", cte="7bit")
    # session 16's charset attack: a lying label's valid and invalid pairs (a browser masks
    # one "\\" of two), SO in ISO-2022-JP (U+FFFD to browsers), a <meta> spelled with
    # character references, a bare utf-16 label (little-endian to browsers, never sniffed)
    mix = '<style>b{{x:"{Q}"{P}"}} i{{background:url({U})}}</style><i>x</i>'
    for case, (bad, good), ctype, meta in (  # bad "": one valid pair, no quote for it
            ("charset_mix_sjis", ("\x85\\", "\x95\\"), "text/html; charset=shift_jis", ""),
            ("charset_mix_big5", ("\x81\\", "\xb3\\"), "text/html; charset=big5", ""),
            ("charset_mix_sjis_meta", ("\x85\\", "\x95\\"), "text/html",
             '<meta charset="shift_jis">'),
            ("charset_meta_entity", ("", "\x95\\"), "text/html",
             '<meta charset="&#115;hift_jis">')):
        markup = meta + (mix.replace("{Q}", bad) if bad else mix.replace('"{Q}"', '"')
                         ).replace("{P}", good)
        out[case] = html_message(page(case, markup), ctype)
    out["charset_2022jp_so_in_url"] = html_message(
        page("charset_2022jp_so_in_url", "<style>i{{background:url({U}\x0e)}}</style><i>x</i>"),
        "text/html; charset=iso-2022-jp", cte="7bit")
    # the second round on those fixes: a shift between blanks, a lone byte before a pair,
    # a <meta> spelled with &UnderBar; or a vertical tab, a charset Chromium guesses
    probe = '<style>b{{x:"\x95\\"}} i{{background:url({U})}}</style><i>x</i>'
    for case, markup, ctype in (
            ("charset_2022jp_blank_shift", "<p>\x1b$BF|\x1b(B</p><img src= \x1b(B {U}>",
             "text/html; charset=iso-2022-jp"),
            ("charset_big5_lone_byte", '<p>\xa4\xa4</p><style>b{{x:"\x86\\" \x80\xb3\\" }} '
             'i{{background:url({U})}} z{{w:"}}</style><i>x</i>', "text/html; charset=big5"),
            ("charset_meta_named_ref", '<meta charset="shift&UnderBar;jis">' + probe, "text/html"),
            ("charset_meta_vt", '<meta http-equiv="Content-Type" content="text/html; '
             'charset\x0b=shift_jis">' + probe, "text/html"),
            ("charset_guessed_sjis", probe, "text/html"),
            ("charset_guessed_big5", probe.replace("\x95", "\xb3"),
             "text/html; charset=x-klingon")):
        out[case] = html_message(page(case, markup), ctype)
    # the third round: an XML declaration's encoding at the start, UTF-16 found by "<?x"
    for case, markup in (
            ("charset_xml_2022_join", '<?xml version="1.0" encoding="iso-2022-jp"?><p>hi</p>'
                                      '<img s\x1b(Brc="{U}">'),
            ("charset_xml_sjis_utf8", '<?xml version="1.0" encoding="shift_jis"?><p>hi</p><style>'
                                      'i{{x:"\xc2\x95\\"; background:url({U}); y:"z"}}</style>'
                                      "<i>x</i>")):
        out[case] = html_message(page(case, markup), "text/html")
    # the fifth round: a Content-Type whose charset Python's email reads otherwise
    for case, ctype in (("charset_param_bare_first", "text/html; charset; charset=shift_jis"),
                        ("charset_param_nbsp", "text/html; charset=\xa0shift_jis")):
        out[case] = html_message(page(case, '<meta charset="windows-1252"><p>hi</p><style>'
                                            'b{{x:"\x95\\"; y:"}} i{{background:url({U})}} '
                                            'z{{w:"}}</style><i>x</i>'), ctype)
    # the fourth round: a label in apostrophes is none a browser knows (the <meta> wins)
    case = "charset_label_apostrophes"
    out[case] = html_message(page(case, '<meta charset="shift_jis"><p>hi</p><style>i{{x:"\xc2'
                                        '\x95\\"; background:url({U}); y:"z"}}</style><i>x</i>'),
                             "text/html; charset='utf-8'")
    xml16 = f'<?xml version="1.0"?><p>x</p><img src="{tracker("charset_utf16_xml_unlabelled")}">'
    out["charset_utf16_xml_unlabelled"] = html_message(xml16.encode("utf-16-le"), "text/html",
                                                       cte="base64")
    tag = f'<img src="{tracker("charset_utf16_bare_mixed_order")}">'.encode("utf-16-le")
    out["charset_utf16_bare_mixed_order"] = html_message(
        ("a" * (len(tag) // 2 * 12)).encode("utf-16-be") + tag, "text/html; charset=utf-16",
        cte="base64")
    return out


# -- templates with the tracker injected -------------------------------------------------------

_INJECTIONS: tuple[tuple[str, str, str], ...] = (
    # (name, where: "body" after <body...>, "end" before </body>, "head" before </head>, snippet)
    ("pixel_end", "end", '<img src="{U}" width="1" height="1" alt="" style="display:block">'),
    ("pixel_top", "body", '<img src="{U}" width="1" height="1" border="0">'),
    ("css_head", "head", "<style>body{{background-image:url('{U}')}}</style>"),
    ("import_head", "head", '<style type="text/css">@import url("{U}");</style>'),
    ("link_head", "head", '<link rel="stylesheet" href="{U}">'),
    ("td_bg_end", "end", '<table><tr><td background="{U}" style="background:url({U})">x'
                         "</td></tr></table>"),
    ("mso_vml", "end", '<!--[if !mso]><!--><div style="background-image:url({U})">x</div>'
                       "<!--<![endif]-->"),
    ("srcset_end", "end", '<img src="data:," srcset="{U} 1x" width="1" height="1">'),
)


def _inject(html: str, where: str, piece: str) -> str:
    low = html.lower()
    if where == "head" and "</head>" in low:
        at = low.index("</head>")
    elif where == "body" and "<body" in low:
        at = low.index(">", low.index("<body")) + 1
    elif "</body>" in low:
        at = low.index("</body>")
    else:
        at = len(html)
    return html[:at] + piece + html[at:]


def template_cases() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i, path in enumerate(TEMPLATE_FILES):
        html = path.read_text("utf-8")
        name, where, piece = _INJECTIONS[i % len(_INJECTIONS)]
        case = f"tpl_{path.stem}_{name}".replace("-", "_")
        second = _INJECTIONS[(i + 3) % len(_INJECTIONS)]
        case2 = f"{case}_2"
        html = _inject(html, where, piece.replace("{U}", tracker(case)).replace("{{", "{")
                       .replace("}}", "}"))
        html = _inject(html, second[1], second[2].replace("{U}", tracker(case2))
                       .replace("{{", "{").replace("}}", "}"))
        cte = ("quoted-printable", "base64", "8bit")[i % 3]
        out[case] = html_message(html.encode(), cte=cte)
    return out


# -- the test ----------------------------------------------------------------------------------

def _cases() -> Iterator[tuple[str, Callable[[], bytes], bool]]:
    """(id, message, javascript)"""
    for name in SNIPPETS:
        if name in NO_CONTROL:
            continue
        yield name, lambda n=name: html_message(snippet(n).encode()), False  # type: ignore[misc]
    for name in ENCODED:
        for cte in ("base64", "quoted-printable"):
            case = f"{name}_{cte.split('-')[0]}"
            yield case, lambda n=name, c=case, e=cte: html_message(  # type: ignore[misc]
                snippet(n, c).encode(), cte=e), False
    for name in WITH_SCRIPT:
        case = f"{name}_js"
        yield case, lambda n=name, c=case: html_message(  # type: ignore[misc]
            snippet(n, c).encode()), True
    for case, data in mime_cases().items():
        yield case, lambda d=data: d, False  # type: ignore[misc]
    for case, data in template_cases().items():
        yield case, lambda d=data: d, False  # type: ignore[misc]


CASES = {case: (make, js) for case, make, js in _cases()}


def refused(data: bytes) -> Decided:
    prepared = prepare(ENGINE, data, CopyPolicy())
    return decide(ENGINE, prepared, RCPT, Policy.REFUSED, CopyPolicy())


def rendered_requests(browser: Renderer, data: bytes, patient: bool = False) -> list[str]:
    """Every non-loopback request Chromium makes rendering the message's HTML parts
    (``patient``: settled after a longer quiet time), and ``tcp://HOST/`` when the
    browser's trap for the tracker host took a connection meanwhile."""
    urls: list[str] = []
    before = browser.trap.connections if browser.trap is not None else 0
    for part in html_parts(data):
        urls += browser.load(part.body, part.charset, *([PATIENT] if patient else []))
    if browser.trap is not None and browser.trap.connections > before:
        urls.append(f"tcp://{HOST}/")
    return urls


@pytest.fixture(scope="module")
def browsers() -> Iterator[dict[bool, Renderer]]:
    """The originals' browsers (the controls), by JavaScript on or off; the tracker host
    resolves to a loopback trap of their own (a preconnect loads nothing else)."""
    with renderer(trap_host=HOST) as plain, renderer(javascript=True, trap_host=HOST) as scripted:
        yield {False: plain, True: scripted}


@pytest.fixture(scope="module")
def refused_browsers() -> Iterator[dict[bool, Renderer]]:
    """The refused copies' browsers: the tracker host resolves to a loopback trap there,
    so a connection without a request (``<link rel=preconnect>``, a retry after the page
    moved on) is seen too, and only a refused copy can have made it."""
    with renderer(trap_host=HOST) as plain, renderer(javascript=True, trap_host=HOST) as scripted:
        yield {False: plain, True: scripted}
        for rendering in (plain, scripted):  # late connections, after the last page
            assert rendering.trap is not None and rendering.trap.connections == 0


def _marker(case: str) -> str:
    return f"/p/{case.removesuffix('_js')}"


@pytest.mark.parametrize("case", list(CASES))
def test_refused_copy_makes_no_remote_load(case: str, browsers: dict[bool, Renderer],
                                           refused_browsers: dict[bool, Renderer]) -> None:
    make, javascript = CASES[case]
    browser = browsers[javascript]
    data = make()
    control = rendered_requests(browser, data)
    if not any(f"//{HOST}/" in url for url in control):  # a busy machine: look again, longer
        control = rendered_requests(browser, data, patient=True)
    assert_refused_copy_loads_nothing(
        data, control, lambda copy: rendered_requests(refused_browsers[javascript], copy),
        only_tracker=case.startswith("tpl_"))  # the template's own images stay (not beacons)


def assert_refused_copy_loads_nothing(data: bytes, control: list[str],
                                      render: Callable[[bytes], list[str]],
                                      only_tracker: bool = False) -> None:
    """The original's rendering ``control`` loads its tracker (else the case proves
    nothing), and the refused copy of ``data``, rendered by ``render``, loads nothing
    remote (``only_tracker``: nothing from the tracker host); a held copy sends nothing."""
    assert any(f"//{HOST}/" in url for url in control), (
        f"control: the original does not load its tracker: {control}")
    copy = refused(data)
    if copy.data is None:
        return  # held: nothing is sent
    loads = render(copy.data)
    if only_tracker:
        loads = [url for url in loads if HOST in url]
    assert not loads, f"{copy.outcome}: the refused copy loads {loads}"


# -- clients that convert a part by its label (Roundcube, clients built on Python's email) --

#: Parts that such a client reads otherwise than a browser: a byte order mark that names
#: another charset than the label (browsers follow the mark, these clients the label), a
#: label whose Python codec pairs bytes otherwise.  (html, label)
BY_LABEL: dict[str, tuple[bytes, str]] = {
    # UTF-8's mark: "\\x95\\" is one Shift_JIS character, so the CSS string ends before url()
    "label_sjis_css_string": (b'\xef\xbb\xbf<style>p{font-family:"\x95\\"} '
                              b'p{background:url({U})} "}</style><p>x</p>', "shift_jis"),
    "label_utf7": (b"\xef\xbb\xbf<p>hi +ADw-img src=+ACI-{U}+ACI-+AD4-</p>", "utf-7"),
    "label_hz_empty_run": (b"\xef\xbb\xbf<p>hi <im~{~}g src={U}></p>", "hz-gb-2312"),
    # UTF-16's mark under a single-byte label: U+6D3C U+6769 ... are "<img ..." in ASCII
    "label_latin1_utf16": (b"\xff\xfe<img src={U}> ", "iso-8859-1"),
    # Python's strict shift_jis knows no NEC pair 0xFA 0x5C: its backslash escapes the quote
    "label_sjis_nec_pair": (b'<style>p{x:"\xfa\\" ";background:url({U});y:"}</style><p>x</p>',
                            "shift_jis"),
    # a label Python does not know: the bytes as ASCII (every backslash one)
    "label_sjis_unknown_to_python": (b'<style>p{x:"\x95\\" ";background:url({U});y:"}'
                                     b"</style><p>x</p>", "x-sjis"),
}


#: Labels only Python's codecs know, as a client built on Python's email decodes them
#: (``get_content()``): text written in the label's codec.  (text, label)
BY_CODEC: dict[str, tuple[str, str]] = {
    "label_ebcdic": ('<p>hi <img src="{U}"></p>', "cp500"),
    "label_ebcdic_alias": ('<p>hi <img src="{U}"></p>', "ebcdic-cp-us"),
    "label_unicode_escape": ('<p>hi \\x3cimg src=\\x22{U}\\x22\\x3e</p>', "latin-1"),
}


def by_label_message(case: str) -> bytes:
    """The message of a :data:`BY_LABEL` or :data:`BY_CODEC` case."""
    if case in BY_LABEL:
        html, label = BY_LABEL[case]
        body = html.replace(b"{U}", tracker(case).encode())
    else:
        text, codec = BY_CODEC[case]
        label = "unicode_escape" if case == "label_unicode_escape" else codec
        body = text.replace("{U}", tracker(case)).encode(codec)
    return html_message(body, f"text/html; charset={label}")


def by_label(html: bytes, label: str) -> bytes:
    """What a client that converts by the label hands its HTML engine, as UTF-8 (a label
    Python does not know: UTF-8, every byte that is none a replacement character)."""
    try:
        text = html.decode(label, "replace")
    except LookupError:
        text = html.decode("utf-8", "replace")
    return text.encode("utf-8", "replace")


def rendered_by_label(browser: Renderer, data: bytes) -> list[str]:
    urls: list[str] = []
    for part in html_parts(data):
        urls += browser.load(by_label(part.body, part.charset or "us-ascii"), "utf-8", PATIENT)
    return urls


@pytest.mark.parametrize("case", [*BY_LABEL, *BY_CODEC])
def test_refused_copy_converted_by_label_loads_nothing(
        case: str, browsers: dict[bool, Renderer],
        refused_browsers: dict[bool, Renderer]) -> None:
    data = by_label_message(case)
    assert_refused_copy_loads_nothing(data, rendered_by_label(browsers[False], data),
                                      lambda copy: rendered_by_label(refused_browsers[False], copy))


def test_the_corpus_is_what_it_says() -> None:
    """Every snippet runs (or says why not), and the corpus stays bounded (~3 min)."""
    assert set(NO_CONTROL) <= set(SNIPPETS)
    assert all(name in SNIPPETS for name in (*ENCODED, *WITH_SCRIPT))
    assert len(TEMPLATE_FILES) in (0, 12)
    assert 250 <= len(CASES) <= 600
