"""The benchmark newsletter: a realistic ~70 KB quoted-printable HTML mail.

multipart/alternative, about 120 product blocks of HTML table rows with
images, Outlook conditional comments with VML, a hidden preheader and two
1x1 tracking pixels (one carrying an MD5 hash).  Shared by the benchmarks.
"""

from __future__ import annotations

import quopri
import random
from datetime import UTC, datetime
from email.utils import format_datetime

__all__ = ["RECIPIENT", "newsletter"]

RECIPIENT = "rcpt@example.net"

_ADJ = ["Organic", "Classic", "Nordic", "Vintage", "Compact", "Premium", "Handmade", "Urban",
        "Alpine", "Everyday", "M\u00fcller's", "Cr\u00e8me", "Smart", "Wireless", "Recycled"]
_NOUN = ["Coffee Grinder", "Desk Lamp", "Backpack", "Tea Set", "Wool Blanket", "Headphones",
         "Water Bottle", "Sneakers", "Cutting Board", "Notebook", "Plant Pot", "Rain Jacket",
         "Espresso Cups", "Bike Light", "Linen Shirt", "Sunglasses"]
_WORDS = ["crafted", "from", "sustainably", "sourced", "materials,", "built", "to", "last",
          "for", "years", "\u2013", "lightweight,", "easy", "to", "clean", "and", "backed",
          "by", "our", "two-year", "guarantee;", "perfect", "for", "gifting", "or", "treating",
          "yourself", "with", "free", "shipping", "over", "50\u00a0\u20ac"]
_NDASH, _MINUS, _RSAQUO = "\u2013", "\u2212", "\u203a"

_HEAD = f"""\
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" \
"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:v="urn:schemas-microsoft-com:vml" \
xmlns:o="urn:schemas-microsoft-com:office:office" lang="de">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<meta http-equiv="X-UA-Compatible" content="IE=edge">
<title>Spring Sale {_NDASH} up to 40% off</title>
<!--[if mso]>
<xml><o:OfficeDocumentSettings><o:AllowPNG/><o:PixelsPerInch>96</o:PixelsPerInch>\
</o:OfficeDocumentSettings></xml>
<style>table,td,div,h1,h3,p{{font-family:Arial,sans-serif;}}</style>
<![endif]-->
<style type="text/css">
body{{margin:0;padding:0;background-color:#f4f4f4;-webkit-text-size-adjust:100%;}}
table{{border-collapse:collapse;mso-table-lspace:0pt;mso-table-rspace:0pt;}}
img{{border:0;line-height:100%;outline:none;text-decoration:none;\
-ms-interpolation-mode:bicubic;display:block;}}
.w{{width:100%;table-layout:fixed;background-color:#f4f4f4;}}
.hero{{background-image:url('https://cdn.shop.example/img/hero-spring.jpg');\
background-size:cover;}}
td.p{{width:120px;padding:16px 0 16px 24px;border-bottom:1px solid #e9ecef;vertical-align:top;}}
td.d{{padding:16px 24px 16px 16px;border-bottom:1px solid #e9ecef;font-family:Arial,sans-serif;\
font-size:14px;line-height:20px;color:#333333;vertical-align:top;}}
h3{{margin:0 0 6px 0;font-size:17px;line-height:22px;color:#1b4332;}}
.pr b{{color:#c0392b;font-size:16px;}} .pr s{{color:#999999;}}
.off{{background:#ffe8d6;color:#9c4a1a;padding:1px 6px;border-radius:3px;font-size:12px;}}
a.b{{color:#1a73e8;font-weight:bold;text-decoration:none;}}
@media screen and (max-width:600px){{td.p,td.d{{display:block!important;width:100%!important;}}\
.hide-mobile{{display:none!important;}}}}
</style>
</head>
<body style="margin:0;padding:0;background-color:#f4f4f4;">
<img src="https://t.esp-mailer.example/o/eyJjIjoiMjAyNS1zcHJpbmciLCJ1IjoiOGYzYjIxIn0.gif" \
width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0;">
<div style="display:none;max-height:0;overflow:hidden;mso-hide:all;">Our biggest spring \
sale: up to 40% off 120 favourites {_NDASH} this week only.&zwnj;&nbsp;&zwnj;&nbsp;</div>
<center class="w">
<table role="presentation" width="600" cellpadding="0" cellspacing="0" border="0" \
align="center" style="width:600px;background-color:#ffffff;">
<tr><td colspan="2" class="hero" align="center" style="padding:40px 24px;\
background-image:url('https://cdn.shop.example/img/hero-spring.jpg');background-color:#2d6a4f;">
<!--[if gte mso 9]>
<v:rect xmlns:v="urn:schemas-microsoft-com:vml" fill="true" stroke="false" \
style="width:600px;height:260px;">
<v:fill type="frame" src="https://cdn.shop.example/img/hero-spring.jpg" color="#2d6a4f" />
<v:textbox inset="0,0,0,0">
<![endif]-->
<h1 style="margin:0;font-family:Arial,Helvetica,sans-serif;font-size:34px;line-height:40px;\
color:#ffffff;">Spring Sale {_NDASH} bis zu 40&nbsp;% Rabatt</h1>
<p style="margin:12px 0 24px 0;font-family:Arial,Helvetica,sans-serif;font-size:16px;\
color:#ffffff;">120 favourites, one week only. Free returns, always.</p>
<!--[if mso]>
<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" \
href="https://shop.example/sale?utm_source=newsletter&amp;utm_campaign=spring" \
style="height:44px;v-text-anchor:middle;width:220px;" arcsize="10%" stroke="f" \
fillcolor="#f4a261"><w:anchorlock/><center style="color:#ffffff;font-family:Arial,sans-serif;\
font-size:16px;font-weight:bold;">Shop the sale</center></v:roundrect>
<![endif]-->
<!--[if !mso]><!-- --><a href="https://shop.example/sale?utm_source=newsletter&amp;\
utm_campaign=spring" style="background-color:#f4a261;border-radius:4px;color:#ffffff;\
display:inline-block;font-family:Arial,sans-serif;font-size:16px;font-weight:bold;\
line-height:44px;text-align:center;text-decoration:none;width:220px;">Shop the sale</a>\
<!--<![endif]-->
<!--[if gte mso 9]>
</v:textbox>
</v:rect>
<![endif]-->
</td></tr>
"""

_PRODUCT = """\
<tr><td class="p"><a href="https://shop.example/p/{sku}?c=spring">\
<img src="https://cdn.shop.example/img/p/{sku}-240.jpg" width="120" \
height="120" alt="{name}"></a></td>
<td class="d"><h3>{name}</h3><p>{desc}</p><p class="pr"><b>{price}&nbsp;\u20ac</b> \
<s>{old}&nbsp;\u20ac</s> <span class="off">{minus}{pct}%</span></p>\
<a class="b" href="https://shop.example/cart?sku={sku}">\
In den Warenkorb {rsaquo}</a></td></tr>
"""

_FOOT = """\
<tr><td colspan="2" align="center" style="padding:24px;font-family:Arial,Helvetica,sans-serif;\
font-size:12px;line-height:18px;color:#6c757d;background-color:#f8f9fa;">
<p style="margin:0 0 8px 0;">You receive this mail because you subscribed at shop.example. \
<a href="https://shop.example/unsubscribe?t=Zm9vYmFyYmF6cXV4" style="color:#6c757d;">\
Unsubscribe</a> \u00b7 <a href="https://shop.example/preferences?t=Zm9vYmFyYmF6cXV4" \
style="color:#6c757d;">Preferences</a> \u00b7 <a href="https://shop.example/view/2025-spring" \
style="color:#6c757d;">View in browser</a></p>
<p style="margin:0;">Shop Example GmbH \u00b7 Hauptstra\u00dfe 1 \u00b7 10115 Berlin</p>
</td></tr>
</table>
</center>
<img src="https://pixel.analytics.example/p.gif?e=open&amp;\
h=5d41402abc4b2a76b9719d911017c592&amp;c=spring" width="1" height="1" border="0" alt="" \
style="height:1px!important;width:1px!important;border-width:0!important;">
</body>
</html>
"""


def newsletter(products: int = 120, seed: int = 1) -> bytes:
    """A realistic multipart/alternative newsletter, LF line ends (smtp-source adds CR)."""
    rnd = random.Random(seed)
    html = [_HEAD]
    text = ["Spring Sale - up to 40% off\n\n"]
    for i in range(products):
        name = f"{rnd.choice(_ADJ)} {rnd.choice(_NOUN)}"
        desc = " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(4, 8))).capitalize()
        old = rnd.randint(19, 299)
        pct = rnd.choice([10, 15, 20, 25, 30, 40])
        price = f"{old * (100 - pct) / 100:.2f}".replace(".", ",")
        sku = f"SKU{100000 + i * 7:06d}"
        html.append(_PRODUCT.format(i=i, sku=sku, name=name, desc=desc, price=price,
                                    old=f"{old},00", pct=pct, minus=_MINUS, rsaquo=_RSAQUO))
        if i < 30:
            text.append(f"* {name}: {price} EUR https://shop.example/p/{sku}\n")
    html.append(_FOOT)
    text.append(f"... and {products - 30} more: https://shop.example/sale\n\n"
                "Unsubscribe: https://shop.example/unsubscribe?t=Zm9vYmFyYmF6cXV4\n")
    qp_html = quopri.encodestring("".join(html).encode()).decode("ascii")
    qp_text = quopri.encodestring("".join(text).encode()).decode("ascii")
    boundary = "----=_Part_8f3b21_1746.1715000000000"
    date = format_datetime(datetime(2025, 3, 20, 9, 30, tzinfo=UTC))
    headers = (
        f"From: Shop Example <news@shop.example>\n"
        f"To: {RECIPIENT}\n"
        f"Subject: =?UTF-8?Q?Spring_Sale_=E2=80=93_up_to_40=25_off?=\n"
        f"Date: {date}\n"
        f"Message-ID: <20250320093000.8f3b21@mailer.shop.example>\n"
        f"List-Unsubscribe: <https://shop.example/unsubscribe?t=Zm9vYmFyYmF6cXV4>,\n"
        f" <mailto:unsubscribe@shop.example>\n"
        f"List-Unsubscribe-Post: List-Unsubscribe=One-Click\n"
        f"X-Mailer: ExampleMailer 4.2\n"
        f"MIME-Version: 1.0\n"
        f'Content-Type: multipart/alternative;\n boundary="{boundary}"\n'
    )
    body = (
        f"\nThis is a multi-part message in MIME format.\n\n"
        f"--{boundary}\n"
        f"Content-Type: text/plain; charset=UTF-8\n"
        f"Content-Transfer-Encoding: quoted-printable\n\n"
        f"{qp_text}\n"
        f"--{boundary}\n"
        f"Content-Type: text/html; charset=UTF-8\n"
        f"Content-Transfer-Encoding: quoted-printable\n\n"
        f"{qp_html}\n"
        f"--{boundary}--\n"
    )
    return (headers + body).encode("ascii")
